// The command lines of sfmc and sfmd through main(argv, io), in this process, with captured output:
// help and version, usage errors (exit 2), unusable files, folders and ports (exit 3), and a real
// server stopped through the io.onStop hook (exit 0). No output may ever be a stack trace.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { CLIENT_HELP, main as clientMain, type Io } from '../src/cli/client.js'
import { SERVER_HELP, main as serverMain } from '../src/cli/server.js'
import { VERSION } from '../src/util/version.js'
import { testdir } from './helpers/testdir.js'

/** What the helpers use of a test: the top-level `t` and its subtests both have it. */
type T = Pick<typeof t, 'teardown' | 'ok' | 'equal' | 'not' | 'same' | 'match' | 'notMatch' | 'notOk' | 'comment'>
type Main = (argv: string[], io: Io) => Promise<number>

const EXIT = { OK: 0, FAILURE: 1, USAGE: 2, ENVIRONMENT: 3, REFUSED: 4 }
/** Every wait in this file ends by this deadline. */
const WAIT_MS = 10_000
/** A stack trace line as V8 prints it. */
const STACK = /\n\s{4}at /

// The client keeps its state (which folder it mirrors) in a folder of this file, not in the user's home;
// and no SFM_TOKEN of the caller's shell is seen (main reads io.env, the client may read process.env).
const STATE_DIR = mkdtempSync(join(tmpdir(), 'sfm-cli-state-'))
process.env['SFM_STATE_DIR'] = STATE_DIR
delete process.env['SFM_TOKEN']
t.teardown(() => rmSync(STATE_DIR, { recursive: true, force: true }))

// ---------------------------------------------------------------------------------------------
// Helpers

interface Running {
  /** The exit code main() returned. */
  readonly done: Promise<number>
  stdout(): string
  /** Lines given to io.stderr. */
  stderr(): string[]
  /** Calls the handler main registered with io.onStop (what SIGTERM does in the real program). */
  stop(): void
  readonly stopRegistered: boolean
  /** Waits until a stderr line matches; throws after `ms` or if main returned first. */
  waitForLine(re: RegExp, ms?: number): Promise<RegExpMatchArray>
}

/** Starts main(argv) with captured output and a stop hook; stopped (bounded) at teardown. */
function start(t: T, main: Main, argv: string[], env: NodeJS.ProcessEnv = {}): Running {
  let out = ''
  const err: string[] = []
  let stopHandler: (() => void) | null = null
  let finished = false
  const done = main(argv, {
    stdout: (text) => void (out += text),
    stderr: (line) => void err.push(line),
    env,
    onStop: (stop) => void (stopHandler = stop),
    onStats: () => {},
  })
  void done.then(
    () => (finished = true),
    () => (finished = true),
  )
  const r: Running = {
    done,
    stdout: () => out,
    stderr: () => err,
    stop: () => stopHandler?.(),
    get stopRegistered() {
      return stopHandler !== null
    },
    async waitForLine(re, ms = WAIT_MS) {
      const deadline = Date.now() + ms
      for (;;) {
        for (const line of err) {
          const m = line.match(re)
          if (m) return m
        }
        if (finished) throw new Error(`main returned (${await done}) before a line matched ${re}:\n${err.join('\n')}`)
        if (Date.now() > deadline) throw new Error(`no line matching ${re} within ${ms} ms:\n${err.join('\n')}`)
        await sleep(20)
      }
    },
  }
  t.teardown(async () => {
    if (!finished) {
      r.stop()
      await within(done, 'main to return after stop at teardown').catch(() => {})
    }
  })
  return r
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** `p`, or 'timeout' once `ms` have passed. */
async function within<V>(p: Promise<V>, _what: string, ms = WAIT_MS): Promise<V | 'timeout'> {
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), ms)))
  try {
    return await Promise.race([p, deadline])
  } finally {
    clearTimeout(timer)
  }
}

interface Result {
  code: number | 'timeout'
  stdout: string
  stderr: string[]
}

/**
 * Runs main(argv) to the end. If it has not returned after `ms`, it is stopped through its onStop hook
 * (and its code is reported as 'timeout'). Every result is checked for stack traces.
 */
async function run(t: T, main: Main, argv: string[], opts: { env?: NodeJS.ProcessEnv; ms?: number } = {}): Promise<Result> {
  const r = start(t, main, argv, opts.env)
  let code = await within(r.done, `main(${JSON.stringify(argv)})`, opts.ms ?? WAIT_MS)
  if (code === 'timeout') {
    r.stop()
    await within(r.done, 'main to return after stop')
  }
  const res = { code, stdout: r.stdout(), stderr: r.stderr() }
  noStackTrace(t, res, argv)
  return res
}

function noStackTrace(t: T, r: { stdout: string; stderr: string[] }, argv: string[]): void {
  const all = r.stdout + '\n' + r.stderr.join('\n')
  t.notMatch(all, STACK, `${JSON.stringify(argv)}: no stack trace in the output`)
  t.notMatch(all, /internal error/, `${JSON.stringify(argv)}: no "internal error"`)
}

/** Exit `code`, exactly one line on stderr that starts with `prog: ` and matches `re`, nothing on stdout. */
function oneLineError(t: T, r: Result, prog: string, code: number, re: RegExp, what: string): void {
  t.equal(r.code, code, `${what}: exit code ${code}; stderr: ${JSON.stringify(r.stderr)}`)
  t.equal(r.stderr.length, 1, `${what}: exactly one line on stderr: ${JSON.stringify(r.stderr)}`)
  const line = r.stderr[0] ?? ''
  t.notMatch(line, /\n/, `${what}: the line has no line break inside`)
  t.match(line, new RegExp(`^${prog}: `), `${what}: the line starts with "${prog}: "`)
  t.match(line, re, `${what}: the line matches ${re}`)
  t.equal(r.stdout, '', `${what}: nothing on stdout`)
}

/** A fresh folder, removed at teardown (not testdir(t): concurrent runs of this file would share it). */
function scratch(t: T): string {
  const dir = mkdtempSync(join(tmpdir(), 'sfm-cli-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** A TCP port held open on `host` until teardown. */
async function occupiedPort(t: T, host: string): Promise<number> {
  const holder = net.createServer()
  await new Promise<void>((resolve, reject) => {
    holder.once('error', reject)
    holder.listen(0, host, () => resolve())
  })
  t.teardown(() => new Promise<void>((resolve) => holder.close(() => resolve())))
  return (holder.address() as net.AddressInfo).port
}

/** sfmd in this process on 127.0.0.1 (or `host`), any free port; waits until it serves. */
async function startServerMain(t: T, dir: string, args: string[] = [], host = '127.0.0.1') {
  const r = start(t, serverMain, [dir, '--host', host, '--port', '0', ...args])
  const m = await r.waitForLine(/serving (.*) on (\[[^\]]+\]|[^\s:]+):(\d+)$/)
  return Object.assign(r, { served: m[1]!, port: Number(m[3]) })
}

/** Stops a server started with startServerMain and returns its exit code (bounded). */
async function stopServer(r: Running): Promise<number | 'timeout'> {
  r.stop()
  return within(r.done, 'the server to stop')
}

const programs: Array<{ prog: 'sfmc' | 'sfmd'; main: Main; help: string }> = [
  { prog: 'sfmc', main: clientMain, help: CLIENT_HELP },
  { prog: 'sfmd', main: serverMain, help: SERVER_HELP },
]

// ---------------------------------------------------------------------------------------------
// Both programs

for (const { prog, main, help } of programs) {
  t.test(`${prog}: --help and --version print to stdout and exit 0`, async (t) => {
    for (const flag of ['--help', '-h']) {
      const r = await run(t, main, [flag])
      t.equal(r.code, EXIT.OK, `${flag}: exit 0`)
      t.equal(r.stdout, help, `${flag}: prints the help`)
      t.same(r.stderr, [], `${flag}: nothing on stderr`)
    }
    t.match(help, new RegExp(`Usage: ${prog} `), 'the help starts with the usage')
    t.match(help, /Exit codes: 0 .*\n?.*2 bad command line/, 'the help lists the exit codes')
    for (const flag of ['--version', '-V']) {
      const r = await run(t, main, [flag])
      t.equal(r.code, EXIT.OK, `${flag}: exit 0`)
      t.equal(r.stdout, `${prog} ${VERSION}\n`, `${flag}: prints "${prog} ${VERSION}"`)
      t.same(r.stderr, [], `${flag}: nothing on stderr`)
    }
    const r = await run(t, main, ['--help', '--bogus'])
    t.equal(r.code, EXIT.USAGE, 'an unknown flag next to --help is still a usage error')
  })

  t.test(`${prog}: an unknown flag is one line on stderr and exit 2`, async (t) => {
    const args = prog === 'sfmc' ? ['folder', '127.0.0.1:7070'] : ['folder']
    for (const flag of ['--bogus', '--bogus=1', '-x', '--no-such-thing']) {
      const r = await run(t, main, [...args, flag])
      oneLineError(t, r, prog, EXIT.USAGE, new RegExp(`unknown option ${flag.replace(/=.*/, '')}`), flag)
      t.match(r.stderr[0] ?? '', /--help/, `${flag}: points at --help`)
    }
  })

  t.test(`${prog}: a missing or an extra argument is a usage error`, async (t) => {
    oneLineError(t, await run(t, main, []), prog, EXIT.USAGE, /usage: /, 'no argument')
    if (prog === 'sfmc') oneLineError(t, await run(t, main, ['folder']), prog, EXIT.USAGE, /usage: /, 'no <host>:<port>')
    const extra = prog === 'sfmc' ? ['folder', '127.0.0.1:7070', 'extra'] : ['folder', 'extra']
    oneLineError(t, await run(t, main, extra), prog, EXIT.USAGE, /unexpected argument "extra"/, 'an extra argument')
  })

  t.test(`${prog}: a flag given twice, or without its value, is a usage error`, async (t) => {
    const args = prog === 'sfmc' ? ['folder', '127.0.0.1:7070'] : ['folder']
    const twice = prog === 'sfmc' ? ['--token-file', 'a', '--token-file', 'b'] : ['--port', '1', '--port', '2']
    const flag = twice[0]!
    oneLineError(t, await run(t, main, [...args, ...twice]), prog, EXIT.USAGE, new RegExp(`${flag} given more than once`), `${flag} twice`)
    oneLineError(t, await run(t, main, [...args, flag]), prog, EXIT.USAGE, new RegExp(`${flag} needs a value`), `${flag} without a value`)
    oneLineError(t, await run(t, main, [...args, `${flag}=`]), prog, EXIT.USAGE, new RegExp(`${flag} needs a value`), `${flag}= (empty)`)
  })

  t.test(`${prog}: token files`, async (t) => {
    const dir = scratch(t)
    const args = prog === 'sfmc' ? [join(dir, 'folder'), '127.0.0.1:7070'] : [join(dir, 'mirror'), '--host', '127.0.0.1', '--port', '0']
    const missing = await run(t, main, [...args, '--token-file', '/missing/token'])
    oneLineError(t, missing, prog, EXIT.ENVIRONMENT, /token file \/missing\/token.*ENOENT/, '--token-file /missing/token')
    writeFileSync(join(dir, 'empty'), '')
    writeFileSync(join(dir, 'blank'), ' \n\t\r\n')
    for (const name of ['empty', 'blank']) {
      const r = await run(t, main, [...args, '--token-file', join(dir, name)])
      oneLineError(t, r, prog, EXIT.ENVIRONMENT, /is empty/, `an ${name} token file`)
    }
    const asDir = await run(t, main, [...args, '--token-file', dir])
    oneLineError(t, asDir, prog, EXIT.ENVIRONMENT, /token file/, 'a folder as the token file')
    t.notOk(existsSync(join(dir, 'mirror')), 'nothing was created for a command line that failed')
  })
}

// ---------------------------------------------------------------------------------------------
// sfmc

t.test('sfmc: <host>:<port> is checked before anything else', async (t) => {
  // With a folder that does not exist, a good target gets as far as the folder check (exit 3) and a bad
  // one stops at the command line (exit 2): nothing is contacted either way.
  const missing = join(scratch(t), 'missing')
  const bad = ['host', 'host:', 'host:0', 'host:99999', 'host:65536', 'host:08080x', 'host:-1', 'host:7070:1', ':7070', '[::1]', '[::1]:', '[::1]7070', '::1:7070', 'host:7 070', 'host:0x10']
  for (const target of bad) {
    const r = await run(t, clientMain, [missing, target, '--once'])
    oneLineError(t, r, 'sfmc', EXIT.USAGE, /host|port/, JSON.stringify(target))
  }
  const good = ['host:7070', 'host:1', 'host:65535', 'host:08080', '127.0.0.1:7070', '[::1]:7070', '[fe80::1%lo]:7070', 'sfm.example.org:7070']
  for (const target of good) {
    const r = await run(t, clientMain, [missing, target, '--once'])
    oneLineError(t, r, 'sfmc', EXIT.ENVIRONMENT, /does not exist/, `${JSON.stringify(target)} is accepted`)
  }
})

t.test('sfmc: a missing folder, or a file, is exit 3', async (t) => {
  const dir = scratch(t)
  const missing = await run(t, clientMain, [join(dir, 'nope'), '127.0.0.1:7070', '--once'])
  oneLineError(t, missing, 'sfmc', EXIT.ENVIRONMENT, /nope"? does not exist/, 'a missing folder')
  writeFileSync(join(dir, 'file'), 'x')
  const file = await run(t, clientMain, [join(dir, 'file'), '127.0.0.1:7070', '--once'])
  oneLineError(t, file, 'sfmc', EXIT.ENVIRONMENT, /not a (readable )?directory/, 'a file instead of a folder')
  const ca = await run(t, clientMain, [dir, '127.0.0.1:7070', '--once', '--tls-ca', join(dir, 'no-ca.pem')])
  oneLineError(t, ca, 'sfmc', EXIT.ENVIRONMENT, /CA file .*no-ca\.pem.*ENOENT/, 'a missing --tls-ca file')
})

t.test('sfmc: bad numbers in flags are usage errors', async (t) => {
  const dir = scratch(t)
  for (const [flag, value] of [['--cache-mb', 'x'], ['--cache-mb', '0'], ['--cache-entries', '1.5'], ['--cache-entries', '1e6']] as const) {
    const r = await run(t, clientMain, [dir, '127.0.0.1:7070', '--once', flag, value])
    oneLineError(t, r, 'sfmc', EXIT.USAGE, new RegExp(`${flag} must be a positive whole number`), `${flag} ${value}`)
  }
})

t.test('sfmc: a --tls-fingerprint that is not a SHA-256 in hex is a usage error', async (t) => {
  // Nothing listens on the target: a fingerprint that is checked on the command line fails at once; one
  // that is not is only looked at after a TLS handshake that never comes (the client retries, and is
  // stopped by this test after 2 s).
  const dir = scratch(t)
  const port = await occupiedPortClosed()
  for (const fp of ['not-hex', 'ab:cd', '0'.repeat(63), 'g'.repeat(64)]) {
    const r = await run(t, clientMain, [dir, `127.0.0.1:${port}`, '--once', '--tls-fingerprint', fp], { ms: 2_000 })
    t.equal(r.code, EXIT.USAGE, `--tls-fingerprint ${fp}: exit 2 at once (got ${r.code}); stderr: ${JSON.stringify(r.stderr)}`)
    t.match(r.stderr.join('\n'), /fingerprint/, `--tls-fingerprint ${fp}: the message names the flag`)
  }
})

/** A port on 127.0.0.1 where nothing listens (taken from the system, then released). */
async function occupiedPortClosed(): Promise<number> {
  const s = net.createServer()
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', () => resolve()))
  const port = (s.address() as net.AddressInfo).port
  await new Promise<void>((resolve) => s.close(() => resolve()))
  return port
}

t.test('sfmc: stopped through io.onStop while it cannot connect, it exits without a stack trace', async (t) => {
  const dir = scratch(t)
  const port = await occupiedPortClosed()
  const r = start(t, clientMain, [dir, `127.0.0.1:${port}`])
  await r.waitForLine(/nothing is listening on 127\.0\.0\.1:\d+/)
  t.ok(r.stopRegistered, 'main registered a stop handler')
  r.stop()
  const code = await within(r.done, 'sfmc to stop')
  t.equal(code, EXIT.OK, 'exit 0 after stop')
  noStackTrace(t, { stdout: r.stdout(), stderr: r.stderr() }, ['stop'])
})

// ---------------------------------------------------------------------------------------------
// sfmd

t.test('sfmd: --port must be a port number', async (t) => {
  const dir = join(scratch(t), 'mirror')
  for (const port of ['abc', '99999', '65536', '1.5', '0x10', '7070x', ' 7070']) {
    const r = await run(t, serverMain, [dir, '--port', port])
    oneLineError(t, r, 'sfmd', EXIT.USAGE, /--port must be a port number/, `--port ${JSON.stringify(port)}`)
  }
  const neg = await run(t, serverMain, [dir, '--port', '-1'])
  t.equal(neg.code, EXIT.USAGE, '--port -1: exit 2')
  t.equal(neg.stderr.length, 1, '--port -1: one line')
  t.notOk(existsSync(dir), 'no mirror folder was created')
})

t.test('sfmd: --tls-cert and --tls-key go together', async (t) => {
  const dir = scratch(t)
  writeFileSync(join(dir, 'cert.pem'), 'x')
  for (const flags of [['--tls-cert', join(dir, 'cert.pem')], ['--tls-key', join(dir, 'cert.pem')]]) {
    const r = await run(t, serverMain, [join(dir, 'mirror'), '--port', '0', ...flags])
    oneLineError(t, r, 'sfmd', EXIT.USAGE, /--tls-cert and --tls-key/, flags[0]!)
  }
  const missing = await run(t, serverMain, [join(dir, 'mirror'), '--host', '127.0.0.1', '--port', '0', '--tls-cert', '/missing/c.pem', '--tls-key', '/missing/k.pem'])
  oneLineError(t, missing, 'sfmd', EXIT.ENVIRONMENT, /\/missing\/c\.pem.*ENOENT/, 'a missing certificate file')
})

t.test('sfmd: a certificate or key file that is not PEM is one line and exit 3', async (t) => {
  const dir = scratch(t)
  writeFileSync(join(dir, 'garbage.pem'), 'this is not a certificate\n')
  const r = await run(t, serverMain, [join(dir, 'mirror'), '--host', '127.0.0.1', '--port', '0', '--tls-cert', join(dir, 'garbage.pem'), '--tls-key', join(dir, 'garbage.pem')])
  oneLineError(t, r, 'sfmd', EXIT.ENVIRONMENT, /certificate|key|PEM/i, 'garbage as --tls-cert and --tls-key')
})

t.test('sfmd: a port in use is one line naming the port, exit 3', async (t) => {
  const dir = scratch(t)
  const port = await occupiedPort(t, '127.0.0.1')
  const r = await run(t, serverMain, [join(dir, 'm1'), '--host', '127.0.0.1', '--port', String(port)])
  oneLineError(t, r, 'sfmd', EXIT.ENVIRONMENT, new RegExp(`port ${port}\\b.*in use`), `--host 127.0.0.1 --port ${port}`)
  // without --host sfmd listens on every address, which includes the occupied one
  const all = await run(t, serverMain, [join(dir, 'm2'), '--port', String(port)])
  oneLineError(t, all, 'sfmd', EXIT.ENVIRONMENT, new RegExp(`port ${port}\\b.*in use`), `--port ${port} on all addresses`)
  t.notMatch(all.stderr[0] ?? '', /\bon\s+is\b/, 'the message does not name an empty host ("on  is")')
  t.notOk(existsSync(join(dir, 'm1')) || existsSync(join(dir, 'm2')), 'no mirror folder is left behind')
})

t.test('sfmd: a non-empty folder it did not create is exit 3 with the --adopt hint; --adopt accepts it', async (t) => {
  const dir = join(scratch(t), 'full')
  mkdirSync(dir)
  writeFileSync(join(dir, 'keep.txt'), 'precious\n')
  const r = await run(t, serverMain, [dir, '--host', '127.0.0.1', '--port', '0'])
  oneLineError(t, r, 'sfmd', EXIT.ENVIRONMENT, /not empty.*--adopt/, 'a non-empty folder')
  t.same(readdirSync(dir), ['keep.txt'], 'the folder is untouched (no .sfm/ in it)')
  const s = await startServerMain(t, dir, ['--adopt'])
  t.equal(await stopServer(s), EXIT.OK, 'with --adopt it serves, and stops with exit 0')
})

t.test('sfmd: a file where the folder should be is exit 3', async (t) => {
  const file = join(scratch(t), 'file')
  writeFileSync(file, 'x')
  oneLineError(t, await run(t, serverMain, [file, '--host', '127.0.0.1', '--port', '0']), 'sfmd', EXIT.ENVIRONMENT, /not a directory/, 'a file')
})

t.test('sfmd: bad numbers in flags are usage errors', async (t) => {
  const dir = join(scratch(t), 'mirror')
  for (const [flag, value] of [['--index-mb', 'x'], ['--index-mb', '0'], ['--index-entries', '12abc'], ['--index-entries', '10k']] as const) {
    const r = await run(t, serverMain, [dir, '--port', '0', flag, value])
    oneLineError(t, r, 'sfmd', EXIT.USAGE, new RegExp(`${flag} must be a positive whole number`), `${flag} ${value}`)
  }
})

t.test('sfmd: serves until io.onStop fires, then exits 0', async (t) => {
  const dir = join(scratch(t), 'mirror')
  const s = await startServerMain(t, dir)
  t.ok(s.stopRegistered, 'main registered a stop handler')
  t.ok(s.port > 0, `listening on port ${s.port}`)
  t.ok(statSync(dir).isDirectory(), 'the mirror folder was created')
  const code = await stopServer(s)
  t.equal(code, EXIT.OK, 'exit 0')
  t.match(s.stderr().join('\n'), /stopping/, 'it says it is stopping')
  noStackTrace(t, { stdout: s.stdout(), stderr: s.stderr() }, ['sfmd serve'])
  // the port is free again and the mirror can be served again
  const again = await startServerMain(t, dir)
  t.equal(await stopServer(again), EXIT.OK, 'served again and stopped again')
})

// ---------------------------------------------------------------------------------------------
// Both together, in this process: names that look like numbers stay names

t.test('a relative mirror folder "08080" and a source folder "123" keep their leading zero and digits', async (t) => {
  const dir = scratch(t)
  const before = process.cwd()
  process.chdir(dir)
  t.teardown(() => process.chdir(before))
  mkdirSync('123')
  writeFileSync(join('123', 'f.txt'), 'from a folder named 123\n')
  writeFileSync('0777', 'secret\n') // a token file named like an octal number
  const s = await startServerMain(t, '08080', ['--token-file', '0777'])
  t.equal(s.served, '08080', 'sfmd says it serves "08080"')
  t.ok(statSync(join(dir, '08080')).isDirectory(), 'the folder "08080" was created')
  t.notOk(existsSync(join(dir, '8080')), 'no folder "8080"')
  const c = await run(t, clientMain, ['123', `127.0.0.1:${s.port}`, '--once', '--token-file', '0777'], { ms: 30_000 })
  t.equal(c.code, EXIT.OK, `sfmc 123 ... --once: exit 0; ${JSON.stringify(c.stderr)}`)
  t.ok(existsSync(join(dir, '08080', 'f.txt')), 'the file from "123" arrived in "08080"')
  t.match(c.stdout, /synced 1 file/, 'the summary on stdout')
  t.equal(await stopServer(s), EXIT.OK, 'the server stops with exit 0')
})

t.test('[::1]:port works end to end (IPv6 loopback)', async (t) => {
  const dir = scratch(t)
  mkdirSync(join(dir, 'src'))
  writeFileSync(join(dir, 'src', 'v6.txt'), 'over ::1\n')
  let s
  try {
    s = await startServerMain(t, join(dir, 'mirror'), [], '::1')
  } catch (err) {
    t.comment(`skipped: no IPv6 loopback here: ${(err as Error).message}`)
    return
  }
  const c = await run(t, clientMain, [join(dir, 'src'), `[::1]:${s.port}`, '--once'], { ms: 30_000 })
  t.equal(c.code, EXIT.OK, `exit 0; ${JSON.stringify(c.stderr)}`)
  t.ok(existsSync(join(dir, 'mirror', 'v6.txt')), 'the file arrived')
  t.equal(await stopServer(s), EXIT.OK, 'the server stops with exit 0')
})
