// `sfmc <dir> <host>:<port>`: the command line of the client. main() returns the exit code.
import { SfmClient } from '../client/client.js'
import { parseDeleteLimit, type DeleteLimit } from '../client/safety.js'
import { formatBytes, type SyncStats } from '../client/stats.js'
import { ProgressReporter, type ProgressMode } from './progress.js'
import { EXIT, FatalError } from '../fatal.js'
import { VERSION } from '../util/version.js'
import { OUTPUT_ALIASES, OUTPUT_FLAGS, loggerFrom, mib, parseArgs, parseCount, parseHostPort, readFileArg, readToken } from './args.js'

export const CLIENT_HELP = `Usage: sfmc <dir> <host>:<port> [options]

Mirrors <dir> to the sfmd server at <host>:<port>: first makes the mirror equal to the
folder, then uploads every change as it happens. Stop it with Ctrl-C.

Options:
  --once                   make the mirror equal to the folder once, wait until the
                           server has confirmed everything, and exit
  --dry-run                show what that would upload (and how many bytes it would
                           send) and delete, and change nothing
  --poll SECONDS           do not watch: look at the whole folder every SECONDS (for
                           file systems without inotify, such as network mounts)
  --rescan SECONDS         while watching, also look at the whole folder every SECONDS
                           in case the watcher missed something (default 3600; 0: never)
  --progress MODE          progress of the first reconcile: tty (a live line), lines
                           (a line every 2 s), json, none; default tty on a terminal,
                           lines otherwise, json with --json, none with --quiet
  --token-file FILE        the shared secret (also: environment variable SFM_TOKEN)
  --tls                    connect with TLS (verified against the system's CAs)
  --tls-ca FILE            trust this CA certificate (PEM) for the server
  --tls-fingerprint HEX    accept only the server certificate with this SHA-256
  --ignore PATTERN         leave paths matching PATTERN alone (gitignore syntax; may
                           be repeated); .sfmignore at the root of <dir> adds more,
                           and edits to it take effect at once. Ignored paths are
                           neither uploaded nor deleted on the mirror.
  --max-delete N|P%|all    hold back deletes that would remove more than N entries
                           (or P% of the mirror) within 5 s, until the files are
                           back; default 50% (20 entries or fewer always go ahead)
  --allow-empty            mirror an empty folder over a non-empty mirror (held back
                           otherwise: an unmounted disk looks empty)
  --accept-new-root        accept that the folder is not the one mirrored last time
                           (another device or inode: held back otherwise)
  --state-dir DIR          where that identity is kept (default $SFM_STATE_DIR,
                           systemd's $STATE_DIRECTORY, or ~/.local/state/sfm)
  --cache-entries N        remember at most N ids of content the server has
                           (skips asking for them again; default 1048576)
  --cache-mb N             ...and use at most N MiB for that (default 64)
  -q, --quiet              only warnings and errors
  -v, --verbose            one line per change the server applied
      --json               log lines as JSON objects
  -h, --help               this text
  -V, --version            the version

Send SIGUSR1 to print the statistics so far (files, bytes, bytes on the wire, saved by dedup).

Exit codes: 0 done, 1 sync failed or the folder vanished, 2 bad command line,
3 unusable folder or file, 4 refused by the server (token, TLS, version),
5 changes held back by a safety check (see --max-delete, --allow-empty,
--accept-new-root).
`

export interface Io {
  stdout: (text: string) => void
  stderr: (line: string) => void
  env: NodeJS.ProcessEnv
  /** Registers a stop handler (SIGINT/SIGTERM in the real program). */
  onStop?: (stop: () => void) => void
  /** Registers a "print the statistics now" handler (SIGUSR1 in the real program). */
  onStats?: (report: () => void) => void
  /** Whether output goes to a terminal (a live progress line then). */
  isTTY?: boolean
  /** Where progress goes (stderr in the real program, so stdout stays for summaries). */
  progress?: (text: string) => void
}

export const processIo = (): Io => ({
  stdout: (t) => process.stdout.write(t),
  stderr: (l) => process.stderr.write(l + '\n'),
  env: process.env,
  onStop: (stop) => {
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
  },
  onStats: (report) => process.on('SIGUSR1', report),
  isTTY: Boolean(process.stderr.isTTY),
  progress: (t) => process.stderr.write(t),
})

type Snapshot = ReturnType<SyncStats['snapshot']>

function summaryLine(t: Snapshot, json: boolean): string {
  if (json) return JSON.stringify({ summary: t }) + '\n'
  return (
    `synced ${t.files} file(s) (${formatBytes(t.bytes)}), ${t.changes} other change(s); ` +
    `sent ${formatBytes(t.wireBytesSent)} on the wire, saved ${formatBytes(t.bytesSaved)} by dedup, in ${t.seconds.toFixed(1)} s\n`
  )
}

export async function main(argv: string[], io: Io = processIo()): Promise<number> {
  try {
    const args = parseArgs(argv, {
      boolean: ['once', 'dry-run', 'tls', 'allow-empty', 'accept-new-root', ...OUTPUT_FLAGS],
      string: ['token-file', 'tls-ca', 'tls-fingerprint', 'cache-entries', 'cache-mb', 'max-delete', 'state-dir', 'ignore', 'progress', 'poll', 'rescan'],
      repeatable: ['ignore'],
      alias: OUTPUT_ALIASES,
    })
    if (args['help']) return io.stdout(CLIENT_HELP), EXIT.OK
    if (args['version']) return io.stdout(`sfmc ${VERSION}\n`), EXIT.OK
    const [dir, target, ...extra] = args._.map(String)
    if (!dir || !target) throw new FatalError('usage: sfmc <dir> <host>:<port> [--once] (see --help)', EXIT.USAGE)
    if (extra.length > 0) throw new FatalError(`unexpected argument ${JSON.stringify(extra[0])} (see --help)`, EXIT.USAGE)
    const { host, port } = parseHostPort(target)
    const log = loggerFrom(args, io.stderr)
    const useTls = Boolean(args['tls'] || args['tls-ca'] || args['tls-fingerprint'])
    const fingerprint = args['tls-fingerprint'] as string | undefined
    if (fingerprint !== undefined && !/^[0-9a-fA-F]{64}$/.test(fingerprint.replace(/:/g, ''))) {
      throw new FatalError('--tls-fingerprint takes the SHA-256 of the server certificate: 64 hex digits, colons optional', EXIT.USAGE)
    }
    let deleteLimit: DeleteLimit | undefined
    if (args['max-delete'] !== undefined) {
      const parsed = parseDeleteLimit(String(args['max-delete']))
      if (!parsed) throw new FatalError(`--max-delete takes a number, a percentage (50%) or "all", not ${JSON.stringify(String(args['max-delete']))}`, EXIT.USAGE)
      deleteLimit = parsed
    }
    const progressMode = (args['progress'] ?? (args['quiet'] ? 'none' : args['json'] ? 'json' : io.isTTY ? 'tty' : 'lines')) as ProgressMode
    if (!['tty', 'lines', 'json', 'none'].includes(progressMode)) {
      throw new FatalError(`--progress takes tty, lines, json or none, not ${JSON.stringify(progressMode)}`, EXIT.USAGE)
    }
    const dryRun = Boolean(args['dry-run'])
    let progress: ProgressReporter | null = null
    const client = new SfmClient({
      root: dir,
      host,
      port,
      once: Boolean(args['once']) || dryRun,
      dryRun: dryRun ? (line) => io.stdout(line + '\n') : undefined,
      pollMs: args['poll'] === undefined ? undefined : parseCount(args['poll'], '--poll')! * 1000,
      rescanMs: args['rescan'] === undefined ? undefined : String(args['rescan']) === '0' ? 0 : parseCount(args['rescan'], '--rescan')! * 1000,
      token: readToken(args['token-file'] as string | undefined, io.env),
      tls: useTls
        ? {
            ca: args['tls-ca'] ? readFileArg(args['tls-ca'] as string, 'CA file') : undefined,
            fingerprint: args['tls-fingerprint'] as string | undefined,
          }
        : undefined,
      cache: {
        entries: parseCount(args['cache-entries'], '--cache-entries'),
        bytes: mib(parseCount(args['cache-mb'], '--cache-mb')),
      },
      deleteLimit,
      ignore: args['ignore'] === undefined ? [] : ([] as string[]).concat(args['ignore'] as string | string[]),
      allowEmpty: Boolean(args['allow-empty']),
      acceptNewRoot: Boolean(args['accept-new-root']),
      stateDir: args['state-dir'] !== undefined ? String(args['state-dir']) : undefined,
      log,
      onApplied: args['verbose'] ? (what, path) => log.info(`${what} ${path}`) : undefined,
      onReconciled: (s) => {
        progress?.stop()
        progress = null
        if (!args['quiet'] && !dryRun) io.stdout(summaryLine(s.snapshot(), Boolean(args['json'])))
      },
    })
    if (!dryRun) {
      progress = new ProgressReporter(client.stats, progressMode, io.progress ?? io.stdout)
      progress.start()
    }
    io.onStop?.(() => client.stop())
    io.onStats?.(() => io.stdout(summaryLine(client.snapshot(), Boolean(args['json']))))
    return await client.run()
  } catch (err) {
    if (err instanceof FatalError) {
      io.stderr(`sfmc: ${err.message}`)
      return err.exitCode
    }
    io.stderr(`sfmc: internal error: ${(err as Error).stack ?? String(err)}`)
    return EXIT.FAILURE
  }
}
