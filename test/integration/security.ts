// Security end to end, with real sfmd and sfmc processes on 127.0.0.1: the shared token (PROTOCOL.md 10),
// TLS (section 11), and what crosses the wire (section 13), recorded by a proxy in between.
//
// What is and is not covered here:
// - Covered with real processes: token from a file (white space around it ignored) and from SFM_TOKEN;
//   refusal of a client without the token or with a wrong one (exit code, one-line message, the
//   server's log, the mirror untouched); a client with a token refusing a server without one
//   [M-AUTH-2]; the token never on the wire, and a recorded session replayed later is refused
//   [M-AUTH-1]; TLS with a CA file, with a pinned fingerprint (with and without colons), a wrong
//   fingerprint, an untrusted certificate, a certificate for another name, TLS against a plain server
//   and plain against a TLS server, TLS + token; under TLS neither contents, names nor the token are
//   visible on the wire.
// - NOT covered with real processes: a peer that is not on loopback [M-AUTH-3]. Every address these
//   tests may use is loopback (127.0.0.0/8 included), so sfmd always sees a loopback peer. Instead,
//   isLoopback() (which the session uses to classify the peer) is checked on typical addresses, and a
//   real Session on a real socket is given a fake non-loopback remote address (the socket's
//   remoteAddress is overridden before the Session sees it), with sfm's own Connection as the client.
//   That exercises the session and the state machine, not SfmServer's listener or the sfmd CLI; the
//   machine's decision table itself is in test/server-machine.ts.
import { execFileSync } from 'node:child_process'
import { X509Certificate, randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import net from 'node:net'
import { join } from 'node:path'
import t from 'tap'
import { Connection, ConnectionError } from '../../src/client/connection.js'
import { silentLogger } from '../../src/log.js'
import { Applier } from '../../src/server/applier.js'
import { Mirror } from '../../src/server/mirror.js'
import { Session, isLoopback } from '../../src/server/session.js'
import { describeTree } from '../helpers/tree.js'
import { SFMC, mirrorDifference, sleep, spawnNode, startServer, type Server } from '../helpers/procs.js'
import { startProxy } from '../helpers/proxy.js'
import { testdir } from '../helpers/testdir.js'

/** What the helpers use of a test: the top-level `t` and its subtests both have it. */
type T = Pick<typeof t, 'teardown' | 'ok' | 'notOk' | 'equal' | 'not' | 'same' | 'match' | 'notMatch'>

/** The documented exit codes (`sfmc --help`). */
const EXIT_REFUSED = 4
/** Every client run below ends by this deadline (the process is killed after it). */
const RUN_MS = 30_000
/** A refusal must be quick: no retrying for a minute. */
const REFUSAL_MS = 20_000

const TOKEN = 'secret'
/**
 * No SFM_TOKEN from the caller's shell may leak into a run (tests that want it set it), and the client
 * keeps its state (which folder it mirrors) in a folder of this file, not in the user's home.
 */
const STATE_DIR = mkdtempSync(join(tmpdir(), 'sfm-security-state-'))
t.teardown(() => rmSync(STATE_DIR, { recursive: true, force: true }))
const NO_ENV_TOKEN = { SFM_TOKEN: undefined, SFM_STATE_DIR: STATE_DIR }

interface Run {
  code: number | string
  stdout: string
  stderr: string
  ms: number
}

/** Runs `sfmc <src> <target> --once ...args` to the end (killed after `ms`: code 'timeout'). */
async function runOnce(t: T, src: string, target: string, args: string[] = [], env: NodeJS.ProcessEnv = {}, ms = RUN_MS): Promise<Run> {
  const start = Date.now()
  const p = spawnNode(t, SFMC, [src, target, '--once', ...args], { ...NO_ENV_TOKEN, ...env })
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<string>((resolve) => (timer = setTimeout(() => resolve('timeout'), ms)))
  const code = await Promise.race([p.exited, deadline])
  clearTimeout(timer)
  if (code === 'timeout') {
    p.kill('SIGKILL')
    await p.exited
  }
  return { code, stdout: p.stdout(), stderr: p.stderr(), ms: Date.now() - start }
}

/** Lines a person would read on stderr (empty lines dropped). */
const lines = (s: string): string[] => s.split('\n').filter((l) => l.trim() !== '')

/** A refusal: a documented exit code, one line on stderr starting with `sfmc: `, no stack trace. */
function assertRefusal(t: T, r: Run, what: string, mentions: RegExp, code: number = EXIT_REFUSED): void {
  t.equal(r.code, code, `${what}: exit code ${code} (took ${r.ms} ms)\n${r.stderr}`)
  t.ok(r.ms < REFUSAL_MS, `${what}: refused within ${REFUSAL_MS} ms, not after retrying (${r.ms} ms)`)
  const l = lines(r.stderr)
  t.equal(l.length, 1, `${what}: exactly one line on stderr: ${JSON.stringify(r.stderr)}`)
  t.match(l[l.length - 1] ?? '', /^sfmc: /, `${what}: the line starts with "sfmc: "`)
  t.match(r.stderr, mentions, `${what}: the message mentions ${mentions}`)
  t.notMatch(r.stderr + r.stdout, /\n\s+at /, `${what}: no stack trace`)
}

/** Waits (bounded) until the server's stderr, after `from`, matches `re`; false if it never does. */
async function serverLogged(server: Server, from: number, re: RegExp, ms = 3_000): Promise<boolean> {
  const deadline = Date.now() + ms
  for (;;) {
    if (re.test(server.stderr().slice(from))) return true
    if (Date.now() > deadline) return false
    await sleep(50)
  }
}

/**
 * A fresh folder, removed at teardown. Not testdir(t): its name is derived from the test's name, so two
 * runs of this file at the same time (several people test in one tree) would wipe each other's folders.
 */
function scratch(t: T): string {
  const dir = mkdtempSync(join(tmpdir(), 'sfm-security-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** In `dir` (created): a folder `src` with these files, and `mirror` next to it (not created). */
function folders(dir: string, files: Record<string, string> = { 'a.txt': 'hello\n', 'sub/b.txt': 'world\n' }) {
  const src = join(dir, 'src')
  mkdirSync(src, { recursive: true })
  for (const [name, content] of Object.entries(files)) {
    const path = join(src, name)
    mkdirSync(join(path, '..'), { recursive: true })
    writeFileSync(path, content)
  }
  return { dir, src, mirror: join(dir, 'mirror') }
}

// =============================================================================================
// Token authentication

t.test('token authentication end to end', async (t) => {
  const { dir, src, mirror } = folders(scratch(t))
  const serverToken = join(dir, 'server-token')
  writeFileSync(serverToken, `${TOKEN}\n`) // as `echo secret > file` writes it
  const spaced = join(dir, 'client-token-spaced')
  writeFileSync(spaced, ` \t${TOKEN} \r\n\n`)
  const bare = join(dir, 'client-token-bare')
  writeFileSync(bare, TOKEN)
  const wrong = join(dir, 'wrong-token')
  writeFileSync(wrong, 'not-the-secret\n')
  const server = await startServer(t, mirror, ['--token-file', serverToken], NO_ENV_TOKEN)
  const target = `127.0.0.1:${server.port}`

  await t.test('the same token from a file works (white space around it is ignored)', async (t) => {
    const r = await runOnce(t, src, target, ['--token-file', spaced])
    t.equal(r.code, 0, `exit 0; stderr: ${r.stderr}`)
    t.equal(mirrorDifference(src, mirror), null, 'the mirror equals the folder')
    writeFileSync(join(src, 'c.txt'), 'third\n')
    const r2 = await runOnce(t, src, target, ['--token-file', bare])
    t.equal(r2.code, 0, `without surrounding white space too: ${r2.stderr}`)
    t.equal(mirrorDifference(src, mirror), null, 'the mirror equals the folder')
  })

  await t.test('the token from SFM_TOKEN works', async (t) => {
    writeFileSync(join(src, 'd.txt'), 'fourth\n')
    const r = await runOnce(t, src, target, [], { SFM_TOKEN: `${TOKEN}\n` })
    t.equal(r.code, 0, `exit 0; stderr: ${r.stderr}`)
    t.equal(mirrorDifference(src, mirror), null, 'the mirror equals the folder')
  })

  await t.test('a client without a token or with a wrong one is refused; the mirror is unchanged', async (t) => {
    const before = describeTree(mirror)
    const start = server.stderr().length
    writeFileSync(join(src, 'must-not-arrive.txt'), 'nope\n')
    rmSync(join(src, 'a.txt'))

    let from = server.stderr().length
    const none = await runOnce(t, src, target)
    assertRefusal(t, none, 'no token', /token/i)
    t.match(none.stderr, /--token-file|SFM_TOKEN/, 'no token: the message says how to give one')
    t.ok(
      await serverLogged(server, from, /127\.0\.0\.1:\d+.*(token|auth)|(token|auth).*127\.0\.0\.1:\d+/i),
      `no token: the server logs the attempt (peer address and why); server log since:\n${server.stderr().slice(from)}`,
    )

    from = server.stderr().length
    const bad = await runOnce(t, src, target, ['--token-file', wrong])
    assertRefusal(t, bad, 'wrong token', /token|auth/i)
    t.ok(
      await serverLogged(server, from, /127\.0\.0\.1:\d+.*authentication failed/i),
      `wrong token: the server logs the attempt; server log since:\n${server.stderr().slice(from)}`,
    )

    from = server.stderr().length
    const badEnv = await runOnce(t, src, target, [], { SFM_TOKEN: 'Secret' })
    assertRefusal(t, badEnv, 'wrong token in SFM_TOKEN (case differs)', /token|auth/i)

    t.same(describeTree(mirror), before, 'nothing was written to the mirror')
    t.notMatch(server.stderr().slice(start), /client connected/, 'no refused client ever got a session')
    t.equal(server.child.exitCode, null, 'the server is still running')
  })

  await t.test('the token never crosses the wire; a recorded session replayed later is refused [M-AUTH-1]', async (t) => {
    // bring the mirror up to date first, so the recorded session carries exactly one new file
    rmSync(join(src, 'must-not-arrive.txt'), { force: true })
    t.equal((await runOnce(t, src, target, ['--token-file', bare])).code, 0, 'in sync')
    const proxy = await startProxy(t, server.port, { record: true })
    const content = `replayed content ${randomBytes(8).toString('hex')}\n`
    writeFileSync(join(src, 'recorded.txt'), content)
    const r = await runOnce(t, src, `127.0.0.1:${proxy.port}`, ['--token-file', spaced])
    t.equal(r.code, 0, `exit 0; stderr: ${r.stderr}`)
    t.equal(mirrorDifference(src, mirror), null, 'synced through the proxy')
    t.ok(proxy.up > 0 && proxy.down > 0, `bytes recorded (${proxy.up} up, ${proxy.down} down)`)
    t.ok(proxy.saw(content), 'sanity: without TLS the recorder does see file contents in clear')
    t.notOk(proxy.saw(TOKEN), 'the token is not in the bytes, either direction')
    t.notOk(proxy.saw(Buffer.from(TOKEN).toString('hex')), 'nor its hex')
    t.notOk(proxy.saw(Buffer.from(TOKEN).toString('base64').replace(/=+$/, '')), 'nor its base64')

    // Remove the file again, then replay the recorded client bytes: a fresh server nonce makes the old
    // MAC useless, so the upload in the recording must not reach the mirror.
    rmSync(join(src, 'recorded.txt'))
    t.equal((await runOnce(t, src, target, ['--token-file', bare])).code, 0, 'file removed from the mirror')
    const recorded = proxy.recorded().up
    const from = server.stderr().length
    const sock = net.connect(server.port, '127.0.0.1')
    sock.on('error', () => {})
    const received: Buffer[] = []
    sock.on('data', (d: Buffer) => received.push(d))
    const closed = new Promise<void>((resolve) => sock.on('close', () => resolve()))
    sock.write(recorded)
    await Promise.race([closed, sleep(5_000)])
    sock.destroy()
    t.ok(await serverLogged(server, from, /authentication failed/i), 'the server refuses the replayed AUTH')
    await sleep(300)
    t.equal(mirrorDifference(src, mirror), null, 'the replayed upload did not reach the mirror')
  })
})

t.test('a client with a token refuses a server without one [M-AUTH-2]', async (t) => {
  const marker = `content that must stay home ${randomBytes(8).toString('hex')}`
  const { dir, src, mirror } = folders(scratch(t), { 'private.txt': marker })
  const tokenFile = join(dir, 'token')
  writeFileSync(tokenFile, `${TOKEN}\n`)
  const server = await startServer(t, mirror, [], NO_ENV_TOKEN)
  const proxy = await startProxy(t, server.port, { record: true })
  const r = await runOnce(t, src, `127.0.0.1:${proxy.port}`, ['--token-file', tokenFile])
  assertRefusal(t, r, 'client with a token, server without', /token/i)
  t.same(describeTree(mirror), [], 'the mirror is still empty')
  t.notOk(proxy.saw(marker), 'no file content was sent to that server')
  t.notOk(proxy.saw('private.txt'), 'no file name was sent to that server')
  t.notOk(proxy.saw(TOKEN), 'and of course not the token')
  const env = await runOnce(t, src, `127.0.0.1:${proxy.port}`, [], { SFM_TOKEN: TOKEN })
  assertRefusal(t, env, 'client with SFM_TOKEN, server without', /token/i)
})

// =============================================================================================
// Peers that are not on loopback [M-AUTH-3] (see the comment at the top: not with real processes)

t.test('isLoopback classifies peer addresses', async (t) => {
  const cases: Array<[string | undefined, boolean]> = [
    ['127.0.0.1', true],
    ['127.0.0.2', true],
    ['127.255.255.254', true],
    ['::1', true],
    ['::ffff:127.0.0.1', true],
    ['10.0.0.1', false],
    ['192.168.1.1', false],
    ['::ffff:192.168.1.1', false],
    ['::ffff:10.0.0.1', false],
    ['fe80::1', false],
    ['2001:db8::1', false],
    ['0.0.0.0', false],
    ['', false],
    [undefined, false],
  ]
  for (const [address, loopback] of cases) t.equal(isLoopback(address), loopback, `${JSON.stringify(address)} is${loopback ? '' : ' not'} loopback`)
})

t.test('a Session whose peer is not on loopback refuses a client without a token (fake remote address)', async (t) => {
  const root = join(scratch(t), 'mirror')
  const mirror = await Mirror.open({ root, log: silentLogger })
  t.teardown(() => mirror.close())
  const applier = new Applier(mirror, false, silentLogger)
  const logged: string[] = []
  const log = { ...silentLogger, warn: (m: string) => void logged.push(m), info: (m: string) => void logged.push(m) }
  let policy = { token: null as Buffer | null, insecure: false }
  const sockets = new Set<net.Socket>()
  const listener = net.createServer((socket) => {
    sockets.add(socket)
    // the one thing faked: where the peer seems to come from
    Object.defineProperty(socket, 'remoteAddress', { value: '10.0.0.1', configurable: true })
    new Session(socket, {
      mirror,
      applier,
      policy: {
        ...policy,
        serverNonce: randomBytes(16),
        mirrorId: mirror.mirrorId,
        maxOpenUploads: 32,
        maxInflight: 4096,
        keepaliveMs: 15_000,
      },
      claim: () => null,
      release: () => {},
      log,
    })
  })
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    for (const s of sockets) s.destroy()
    return new Promise<void>((resolve) => listener.close(() => resolve()))
  })
  const port = (listener.address() as net.AddressInfo).port
  const open = (token: Buffer | null) => {
    const attempt = Connection.open({ host: '127.0.0.1', port, identity: { clientId: randomBytes(16), clientName: 'fake-remote', token }, log: silentLogger })
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('no answer in 5 s')), 5_000)))
    return Promise.race([attempt, deadline]).finally(() => clearTimeout(timer))
  }

  const err = await open(null).then(
    (c) => {
      c.close()
      return null
    },
    (e: unknown) => e,
  )
  t.ok(err instanceof ConnectionError, `refused: ${String(err)}`)
  t.equal((err as ConnectionError).code, 'SFM_ERR_AUTH_REQUIRED', 'with SFM_ERR_AUTH_REQUIRED')
  t.match((err as ConnectionError).message, /--token-file/, 'the message says how to set a token')
  t.match((err as ConnectionError).message, /SFM_TOKEN/, 'and names the environment variable')
  t.equal((err as ConnectionError).retry, false, 'retrying cannot help')
  t.ok(logged.some((l) => /10\.0\.0\.1/.test(l)), `the server logs the refused peer: ${JSON.stringify(logged)}`)

  policy = { token: Buffer.from(TOKEN), insecure: false }
  const withToken = await open(Buffer.from(TOKEN))
  t.equal(withToken.welcome.authRequired, true, 'with a token on both sides the same peer is accepted')
  withToken.close()

  policy = { token: null, insecure: true }
  const insecure = await open(null)
  t.equal(insecure.welcome.authRequired, false, 'with --insecure the same peer is accepted without a token')
  insecure.close()
})

// =============================================================================================
// TLS

interface Pki {
  caPem: string
  cert: string
  key: string
  /** A certificate from the same CA for a name that is not this server. */
  otherCert: string
  otherKey: string
  /** A CA that signed none of them. */
  strangerCaPem: string
  /** SHA-256 of `cert`, as openssl prints it: upper case with colons. */
  fingerprint: string
}

function mkdirp(dir: string): string {
  mkdirSync(dir, { recursive: true })
  return dir
}

function openssl(dir: string, args: string[]): string {
  return execFileSync('openssl', args, { cwd: dir, timeout: 30_000, stdio: ['ignore', 'pipe', 'pipe'] }).toString()
}

/** A CA and server certificates made with the openssl CLI (EC P-256: quick to generate). */
function makePki(dir: string): Pki {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  const ca = ['-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']
  openssl(dir, ['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=sfm test CA', ...ca])
  openssl(dir, ['req', '-x509', ...ec, '-keyout', 'stranger.key', '-out', 'stranger.pem', '-days', '2', '-subj', '/CN=some other CA', ...ca])
  const leaf = (name: string, san: string) => {
    writeFileSync(join(dir, `${name}.ext`), `subjectAltName=${san}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n`)
    openssl(dir, ['req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', '/CN=localhost'])
    openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', '-extfile', `${name}.ext`])
  }
  leaf('server', 'IP:127.0.0.1,DNS:localhost')
  leaf('other', 'DNS:other.example')
  const fp = /Fingerprint=([0-9A-Fa-f:]+)/.exec(openssl(dir, ['x509', '-in', 'server.pem', '-noout', '-fingerprint', '-sha256']))
  if (!fp) throw new Error('openssl printed no fingerprint')
  return {
    caPem: join(dir, 'ca.pem'),
    cert: join(dir, 'server.pem'),
    key: join(dir, 'server.key'),
    otherCert: join(dir, 'other.pem'),
    otherKey: join(dir, 'other.key'),
    strangerCaPem: join(dir, 'stranger.pem'),
    fingerprint: fp[1]!,
  }
}

t.test('TLS end to end', async (t) => {
  const base = scratch(t)
  const pki = makePki(mkdirp(join(base, 'pki')))
  t.equal(pki.fingerprint, new X509Certificate(readFileSync(pki.cert)).fingerprint256, 'sanity: openssl and node agree on the fingerprint')
  const { src, mirror } = folders(join(base, 'main'))
  const server = await startServer(t, mirror, ['--tls-cert', pki.cert, '--tls-key', pki.key], NO_ENV_TOKEN)
  const target = `127.0.0.1:${server.port}`

  await t.test('--tls-ca with the CA works, by IP and by name', async (t) => {
    const r = await runOnce(t, src, target, ['--tls-ca', pki.caPem])
    t.equal(r.code, 0, `exit 0; stderr: ${r.stderr}`)
    t.equal(mirrorDifference(src, mirror), null, 'the mirror equals the folder')
    writeFileSync(join(src, 'by-name.txt'), 'via localhost\n')
    const r2 = await runOnce(t, src, `localhost:${server.port}`, ['--tls-ca', pki.caPem])
    t.equal(r2.code, 0, `exit 0; stderr: ${r2.stderr}`)
    t.equal(mirrorDifference(src, mirror), null, 'the mirror equals the folder')
  })

  await t.test('--tls-fingerprint works with and without colons, in either case', async (t) => {
    const variants = [pki.fingerprint, pki.fingerprint.replace(/:/g, ''), pki.fingerprint.replace(/:/g, '').toLowerCase(), pki.fingerprint.toLowerCase()]
    for (const [i, fp] of variants.entries()) {
      writeFileSync(join(src, `fp-${i}.txt`), `pinned ${i}\n`)
      const r = await runOnce(t, src, target, ['--tls-fingerprint', fp])
      t.equal(r.code, 0, `${fp}: ${r.stderr}`)
      t.equal(mirrorDifference(src, mirror), null, `${fp}: the mirror equals the folder`)
    }
  })

  await t.test('refusals: wrong fingerprint, untrusted certificate, certificate for another name', async (t) => {
    const before = describeTree(mirror)
    writeFileSync(join(src, 'must-not-arrive.txt'), 'nope\n')
    const hex = pki.fingerprint.replace(/:/g, '')
    const wrongFp = (hex[0] === '0' ? '1' : '0') + hex.slice(1)
    assertRefusal(t, await runOnce(t, src, target, ['--tls-fingerprint', wrongFp]), 'wrong fingerprint', /fingerprint/i)
    assertRefusal(t, await runOnce(t, src, target, ['--tls']), '--tls, self-signed CA not trusted by the system', /TLS|certificate/i)
    assertRefusal(t, await runOnce(t, src, target, ['--tls-ca', pki.strangerCaPem]), '--tls-ca of another CA', /TLS|certificate/i)
    t.same(describeTree(mirror), before, 'nothing was written to the mirror')
    rmSync(join(src, 'must-not-arrive.txt'))

    const { src: src2, mirror: mirror2 } = folders(scratch(t))
    const other = await startServer(t, mirror2, ['--tls-cert', pki.otherCert, '--tls-key', pki.otherKey], NO_ENV_TOKEN)
    const r = await runOnce(t, src2, `127.0.0.1:${other.port}`, ['--tls-ca', pki.caPem])
    assertRefusal(t, r, 'a certificate (from the trusted CA) for another name', /TLS|certificate|altname|match/i)
    t.same(describeTree(mirror2), [], 'nothing was written to that mirror')
  })

  await t.test('a --tls-ca file that is not a certificate fails clearly', async (t) => {
    const garbage = join(scratch(t), 'garbage.pem')
    writeFileSync(garbage, 'this is not a certificate\n')
    const r = await runOnce(t, src, target, ['--tls-ca', garbage])
    t.not(r.code, 0, `does not succeed: ${r.stderr}`)
    t.ok([3, EXIT_REFUSED].includes(r.code as number), `exit code 3 (unusable file) or 4: ${r.code}`)
    t.ok(r.ms < REFUSAL_MS, `fails within ${REFUSAL_MS} ms (${r.ms} ms)`)
    t.equal(lines(r.stderr).length, 1, `one line: ${JSON.stringify(r.stderr)}`)
    t.notMatch(r.stderr, /\n\s+at /, 'no stack trace')
  })

  await t.test('a plain client against the TLS server fails clearly, not after a minute of retries', async (t) => {
    const r = await runOnce(t, src, target, [], {}, REFUSAL_MS + 5_000)
    assertRefusal(t, r, 'plain client, TLS server', /TLS/i)
  })

  await t.test('file contents, names and the token are not on the wire in clear under TLS (with a token too)', async (t) => {
    const { dir, src: s, mirror: m } = folders(scratch(t), {})
    const tokenFile = join(dir, 'token')
    writeFileSync(tokenFile, `${TOKEN}\n`)
    const marker = `TOP-SECRET-CONTENT-${randomBytes(8).toString('hex')}-`
    writeFileSync(join(s, 'confidential-name.txt'), marker.repeat(50))
    writeFileSync(join(s, 'small.txt'), marker)
    const tlsToken = await startServer(t, m, ['--tls-cert', pki.cert, '--tls-key', pki.key, '--token-file', tokenFile], NO_ENV_TOKEN)
    const proxy = await startProxy(t, tlsToken.port, { record: true })
    const via = `127.0.0.1:${proxy.port}`

    assertRefusal(t, await runOnce(t, s, via, ['--tls-ca', pki.caPem]), 'TLS without the token', /token/i)
    assertRefusal(t, await runOnce(t, s, via, ['--tls-ca', pki.caPem], { SFM_TOKEN: 'wrong' }), 'TLS with a wrong token', /token|auth/i)
    t.same(describeTree(m), [], 'nothing written')

    const r = await runOnce(t, s, via, ['--tls-ca', pki.caPem, '--token-file', tokenFile])
    t.equal(r.code, 0, `TLS + token works: ${r.stderr}`)
    t.equal(mirrorDifference(s, m), null, 'the mirror equals the folder')
    const fp = await runOnce(t, s, via, ['--tls-fingerprint', pki.fingerprint], { SFM_TOKEN: TOKEN })
    t.equal(fp.code, 0, `TLS (pinned) + SFM_TOKEN works: ${fp.stderr}`)

    t.ok(proxy.up > 1000, `bytes recorded (${proxy.up} up, ${proxy.down} down)`)
    t.equal(proxy.recorded().up[0], 0x16, 'the client speaks TLS first (a handshake record)')
    t.notOk(proxy.saw(marker), 'file contents are not in clear')
    t.notOk(proxy.saw('confidential-name'), 'file names are not in clear')
    t.notOk(proxy.saw(TOKEN), 'the token is not in clear')
    t.notOk(proxy.saw(Buffer.from([0x89, 0x53, 0x46, 0x4d])), 'not even the sfm MAGIC is in clear')
  })
})

t.test('a TLS client against a plain server fails clearly, not after a minute of retries', async (t) => {
  const base = scratch(t)
  const pki = makePki(mkdirp(join(base, 'pki')))
  const { src, mirror } = folders(join(base, 'main'))
  const server = await startServer(t, mirror, [], NO_ENV_TOKEN)
  const r = await runOnce(t, src, `127.0.0.1:${server.port}`, ['--tls-ca', pki.caPem], {}, REFUSAL_MS + 5_000)
  assertRefusal(t, r, 'TLS client, plain server', /TLS/i)
  t.same(describeTree(mirror), [], 'nothing was written')
})
