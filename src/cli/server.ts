// `sfmd <dir>`: the command line of the server. main() returns the exit code.
import { EXIT, FatalError } from '../fatal.js'
import { SfmServer } from '../server/server.js'
import { VERSION } from '../util/version.js'
import { OUTPUT_ALIASES, OUTPUT_FLAGS, loggerFrom, mib, parseArgs, parseCount, parsePort, readFileArg, readToken } from './args.js'
import { processIo, type Io } from './client.js'

export const SERVER_HELP = `Usage: sfmd <dir> [options]

Receives a mirror into <dir> from one sfmc client at a time. <dir> must be empty or
missing the first time (it is created); after that it holds the mirror and, in
<dir>/.sfm/, the server's own state.

Options:
  --port PORT              TCP port to listen on (default 7070; 0: any free port)
  --host ADDR              address to listen on (default: all addresses)
  --no-fsync               do not flush to disk before confirming a change: faster,
                           but a power loss can lose confirmed changes
  --adopt                  accept a non-empty <dir> that sfm did not create and reuse
                           its content (what the client does not have is deleted)
  --token-file FILE        the shared secret (also: environment variable SFM_TOKEN);
                           without one, only clients on this machine may connect
  --insecure               accept clients from other machines without a token
  --tls-cert FILE          serve TLS with this certificate (PEM) ...
  --tls-key FILE           ... and this private key (PEM)
  --index-entries N        keep at most N content ids in memory for dedup
                           (least recently used go first; default 4194304)
  --index-mb N             ...and use at most N MiB for them (default 256)
  -q, --quiet              only warnings and errors
  -v, --verbose            debug output
      --json               log lines as JSON objects
  -h, --help               this text
  -V, --version            the version

Exit codes: 0 stopped by SIGTERM/SIGINT, 1 failure, 2 bad command line,
3 unusable folder, port or file.
`

function hostPort(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`
}

export async function main(argv: string[], io: Io = processIo()): Promise<number> {
  try {
    const args = parseArgs(argv, {
      boolean: ['fsync', 'adopt', 'insecure', ...OUTPUT_FLAGS],
      string: ['port', 'host', 'token-file', 'tls-cert', 'tls-key', 'index-entries', 'index-mb'],
      alias: OUTPUT_ALIASES,
    })
    if (args['help']) return io.stdout(SERVER_HELP), EXIT.OK
    if (args['version']) return io.stdout(`sfmd ${VERSION}\n`), EXIT.OK
    const [dir, ...extra] = args._.map(String)
    if (!dir) throw new FatalError('usage: sfmd <dir> [--port 7070] (see --help)', EXIT.USAGE)
    if (extra.length > 0) throw new FatalError(`unexpected argument ${JSON.stringify(extra[0])} (see --help)`, EXIT.USAGE)
    const port = args['port'] === undefined ? 7070 : parsePort(String(args['port']), '--port', true)
    const certFile = args['tls-cert'] as string | undefined
    const keyFile = args['tls-key'] as string | undefined
    if (Boolean(certFile) !== Boolean(keyFile)) throw new FatalError('--tls-cert and --tls-key go together', EXIT.USAGE)
    const log = loggerFrom(args, io.stderr)
    const server = await SfmServer.start({
      root: dir,
      host: (args['host'] as string | undefined) ?? '',
      port,
      fsync: args['fsync'] !== false,
      adopt: Boolean(args['adopt']),
      token: readToken(args['token-file'] as string | undefined, io.env),
      insecure: Boolean(args['insecure']),
      tls: certFile && keyFile ? { cert: readFileArg(certFile, 'certificate'), key: readFileArg(keyFile, 'key') } : undefined,
      index: { entries: parseCount(args['index-entries'], '--index-entries'), bytes: mib(parseCount(args['index-mb'], '--index-mb')) },
      log,
    })
    const a = server.address()
    log.info(`sfmd ${VERSION} serving ${dir} on ${hostPort(a.host, a.port)}`)
    await new Promise<void>((resolve) => {
      if (io.onStop) io.onStop(resolve)
    })
    log.info('stopping')
    await server.stop()
    return EXIT.OK
  } catch (err) {
    if (err instanceof FatalError) {
      io.stderr(`sfmd: ${err.message}`)
      return err.exitCode
    }
    io.stderr(`sfmd: internal error: ${(err as Error).stack ?? String(err)}`)
    return EXIT.FAILURE
  }
}
