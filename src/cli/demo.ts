// `npm run demo -- <folder>`: sfmd on a fresh mirror in a temporary folder and sfmc on <folder>, in one
// process, printing each change as the server confirms it. Ctrl-C stops both and removes the mirror.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { SfmClient } from '../client/client.js'
import { formatBytes } from '../client/stats.js'
import { EXIT, FatalError } from '../fatal.js'
import { createLogger } from '../log.js'
import { SfmServer } from '../server/server.js'

export async function main(argv: string[]): Promise<number> {
  const folder = argv[0]
  if (!folder || argv.length > 1 || folder.startsWith('-')) {
    process.stderr.write('usage: npm run demo -- <folder>\n')
    return EXIT.USAGE
  }
  const mirror = await mkdtemp(join(tmpdir(), 'sfm-demo-'))
  const log = createLogger({ level: 'warn', json: false })
  let server: SfmServer | null = null
  try {
    server = await SfmServer.start({ root: join(mirror, 'mirror'), host: '127.0.0.1', port: 0, fsync: true, log })
    const { port } = server.address()
    const t0 = Date.now()
    const stamp = () => `${((Date.now() - t0) / 1000).toFixed(3).padStart(8)} s`
    process.stdout.write(`sfm demo: mirroring ${resolve(folder)}\n      to ${join(mirror, 'mirror')} (sfmd on 127.0.0.1:${port})\n`)
    process.stdout.write('change files in the folder and watch them arrive; Ctrl-C to stop\n\n')
    const client = new SfmClient({
      root: folder,
      host: '127.0.0.1',
      port,
      once: false,
      token: null,
      stateDir: null, // a fresh mirror every time: nothing to protect across runs
      log,
      onApplied: (what, path) => process.stdout.write(`${stamp()}  ${what.padEnd(10)} ${path}\n`),
      onReconciled: () => {},
    })
    process.once('SIGINT', () => client.stop())
    process.once('SIGTERM', () => client.stop())
    const code = await client.run()
    const s = client.stats.snapshot()
    process.stdout.write(
      `\n${s.files} file(s) uploaded (${formatBytes(s.bytes)}), ${formatBytes(s.dataBytesSent)} of file data sent, ` +
        `${formatBytes(s.bytesSaved)} saved by dedup\n`,
    )
    return code
  } catch (err) {
    process.stderr.write(`sfm demo: ${err instanceof FatalError ? err.message : String(err)}\n`)
    return err instanceof FatalError ? err.exitCode : EXIT.FAILURE
  } finally {
    await server?.stop()
    await rm(mirror, { recursive: true, force: true })
  }
}

process.exit(await main(process.argv.slice(2)))
