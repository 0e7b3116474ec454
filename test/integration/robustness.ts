// End to end under stress: big files, bursts, a server killed mid-upload, files that change while they
// are read, a second client, a vanished folder, a server that is not up yet.
import { createHash, randomBytes } from 'node:crypto'
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { mirrorDifference, sleep, startClient, startServer, syncOnce, uploadFiles, waitForMirror, waitUntil } from '../helpers/procs.js'
import { startProxy } from '../helpers/proxy.js'
import { testdir } from '../helpers/testdir.js'

const MiB = 1 << 20

/** Writes `size` pseudo-random bytes (a seeded stream, so versions differ but are reproducible). */
function writeRandomFile(path: string, size: number, seed: string): string {
  const hash = createHash('sha256')
  const fd = openSync(path, 'w')
  let block = createHash('sha256').update(seed).digest()
  for (let done = 0; done < size; ) {
    const n = Math.min(8 * MiB, size - done)
    const buf = Buffer.allocUnsafe(n)
    for (let o = 0; o < n; o += 32) {
      block = createHash('sha256').update(block).digest()
      block.copy(buf, o, 0, Math.min(32, n - o))
    }
    writeSync(fd, buf)
    hash.update(buf)
    done += n
  }
  closeSync(fd)
  return hash.digest('hex')
}

function sha(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex')
}

t.test('a 200 MiB file is streamed: memory does not grow with its size', async (t) => {
  const dir = testdir(t)
  const src = join(dir, 'src')
  const mirror = join(dir, 'mirror')
  mkdirSync(src)
  writeRandomFile(join(src, 'big.bin'), 200 * MiB, 'big')
  const server = await startServer(t, mirror)
  const client = startClient(t, src, server.port)
  await waitForMirror(src, mirror, 120_000)
  const clientRss = client.peakRss()
  const serverRss = server.peakRss()
  t.ok(clientRss < 200 * MiB, `client peak RSS ${Math.round(clientRss / MiB)} MiB`)
  t.ok(serverRss < 200 * MiB, `server peak RSS ${Math.round(serverRss / MiB)} MiB`)
})

t.test('5,000 small files written in a burst all arrive', async (t) => {
  const dir = testdir(t)
  const src = join(dir, 'src')
  const mirror = join(dir, 'mirror')
  mkdirSync(src)
  const server = await startServer(t, mirror)
  startClient(t, src, server.port)
  await waitForMirror(src, mirror)
  for (let d = 0; d < 50; d++) {
    mkdirSync(join(src, `d${d}`))
    for (let i = 0; i < 100; i++) writeFileSync(join(src, `d${d}`, `f${i}`), `dir ${d} file ${i}\n`)
  }
  await waitForMirror(src, mirror, 60_000)
})

t.test('a server killed with SIGKILL mid-upload never shows a partial file, and converges after a restart', async (t) => {
  const dir = testdir(t)
  const src = join(dir, 'src')
  const mirror = join(dir, 'mirror')
  mkdirSync(src)
  const full = writeRandomFile(join(src, 'big.bin'), 96 * MiB, 'kill')
  for (let i = 0; i < 200; i++) writeFileSync(join(src, `small${i}`), `small ${i}`)
  let server = await startServer(t, mirror)
  const port = server.port
  const client = startClient(t, src, port)

  // Watch the mirror: a file at its final path must be complete, whenever we look.
  const violations: string[] = []
  let watching = true
  const monitor = (async () => {
    while (watching) {
      const p = join(mirror, 'big.bin')
      if (existsSync(p)) {
        const size = statSync(p).size
        if (size !== 96 * MiB) violations.push(`big.bin had ${size} bytes`)
      }
      await sleep(5)
    }
  })()

  await waitUntil(() => existsSync(join(mirror, '.sfm/tmp')) && uploadFiles(mirror, server.pid!).length > 0, 30_000, () => 'no upload started')
  server.kill('SIGKILL')
  await server.exited
  server = await startServer(t, mirror, ['--port', String(port)])
  await waitForMirror(src, mirror, 120_000)
  watching = false
  await monitor
  t.same(violations, [], 'no partial file was ever visible')
  t.equal(sha(join(mirror, 'big.bin')), full)
  t.same(readdirSync(join(mirror, '.sfm/tmp')), [], 'no temporary file left behind')
  t.notMatch(client.output(), /internal error/)
})

// 6 MiB takes the two-pass upload (read to build the tree, then send); 24 MiB a new file's one-pass
// upload (read, chunk and send at once), which must notice the change at the end and start again.
const rewrites = [
  [6 * MiB, 30],
  [24 * MiB, 10],
] as const
for (const [size, rounds] of rewrites) t.test(`a file of ${size / MiB} MiB rewritten while it is read is never mirrored as a mixture of two versions`, async (t) => {
  const dir = testdir(t)
  const src = join(dir, 'src')
  const mirror = join(dir, 'mirror')
  mkdirSync(src)
  const versions = [randomBytes(size), randomBytes(size)]
  writeFileSync(join(src, 'hot'), versions[0]!)
  const server = await startServer(t, mirror)
  startClient(t, src, server.port)
  await waitForMirror(src, mirror)
  // The writer truncates and writes each version in pieces, so every state the source itself goes
  // through is a prefix of one version. A read that overlapped a rewrite would give old bytes followed
  // by new ones: the mirror must never show that.
  const isStateOfSource = (b: Buffer) => versions.some((v) => b.length <= v.length && v.subarray(0, b.length).equals(b))
  const bad: string[] = []
  let observed = 0
  let stop = false
  const monitor = (async () => {
    while (!stop) {
      try {
        const b = readFileSync(join(mirror, 'hot'))
        observed++
        if (!isStateOfSource(b)) bad.push(`${b.length} bytes, sha256 ${createHash('sha256').update(b).digest('hex').slice(0, 12)}`)
      } catch {
        // renamed over at this instant: not a partial file
      }
      await sleep(10)
    }
  })()
  // rewrite in place (truncate, then write in pieces): a reader in between sees a torn file
  for (let round = 0; round < rounds; round++) {
    const v = versions[round % 2]!
    const fd = openSync(join(src, 'hot'), 'w')
    for (let o = 0; o < v.length; o += MiB) {
      writeSync(fd, v, o, MiB)
      await sleep(1)
    }
    closeSync(fd)
  }
  await waitForMirror(src, mirror, 30_000)
  stop = true
  await monitor
  t.ok(observed > 0, 'the mirror was watched')
  t.same(bad, [], 'every state the mirror showed is a state the file had')
  t.ok(readFileSync(join(mirror, 'hot')).equals(versions[1]!), 'it ends with the last version')
})

t.test('a second client is refused while the first is connected; a restarted client is not locked out', async (t) => {
  const dir = testdir(t)
  const a = join(dir, 'a')
  const b = join(dir, 'b')
  mkdirSync(a)
  mkdirSync(b)
  writeFileSync(join(a, 'from-a'), 'a')
  writeFileSync(join(b, 'from-b'), 'b')
  const server = await startServer(t, join(dir, 'mirror'))
  const first = startClient(t, a, server.port)
  await waitForMirror(a, join(dir, 'mirror'))
  const second = await syncOnce(t, b, server.port, [], 20_000)
  t.not(second.code, 0, 'the other client fails')
  t.match(second.output, /in use by another client/)
  t.equal(mirrorDifference(a, join(dir, 'mirror')), null, 'the mirror is untouched')
  // the same folder again (a restart) takes over at once
  first.kill('SIGKILL')
  await first.exited
  writeFileSync(join(a, 'after-restart'), 'x')
  const again = await syncOnce(t, a, server.port, [], 30_000)
  t.equal(again.code, 0, again.output)
  t.equal(mirrorDifference(a, join(dir, 'mirror')), null)
})

t.test('a client whose folder disappears stops with an error and deletes nothing', async (t) => {
  const dir = testdir(t)
  const src = join(dir, 'src')
  const mirror = join(dir, 'mirror')
  mkdirSync(src)
  for (let i = 0; i < 20; i++) writeFileSync(join(src, `f${i}`), String(i))
  const server = await startServer(t, mirror)
  const client = startClient(t, src, server.port)
  await waitForMirror(src, mirror)
  renameSync(src, join(dir, 'elsewhere'))
  const code = await Promise.race([client.exited, sleep(15_000).then(() => 'still running')])
  t.not(code, 0, 'exits non-zero')
  t.not(code, 'still running')
  t.match(client.output(), /folder/)
  t.equal(readdirSync(mirror).filter((n) => n !== '.sfm').length, 20, 'nothing deleted on the mirror')
  rmSync(join(dir, 'elsewhere'), { recursive: true })
})

t.test('a client started before its server retries until the server is up', async (t) => {
  const dir = testdir(t)
  const src = join(dir, 'src')
  const mirror = join(dir, 'mirror')
  mkdirSync(src)
  writeFileSync(join(src, 'f'), 'waiting')
  // find a free port, then leave it free for a moment
  const probe = await startServer(t, join(dir, 'probe'))
  const port = probe.port
  probe.kill('SIGTERM')
  await probe.exited
  const client = startClient(t, src, port)
  await client.waitForOutput(/nothing is listening|retrying/, 10_000)
  await startServer(t, mirror, ['--port', String(port)])
  await waitForMirror(src, mirror, 30_000)
})

t.test('behind a proxy, a server down for seconds is waited for: closes without a greeting are retried', async (t) => {
  const dir = testdir(t)
  const src = join(dir, 'src')
  const mirror = join(dir, 'mirror')
  mkdirSync(src)
  writeFileSync(join(src, 'before'), 'first')
  let server = await startServer(t, mirror)
  const port = server.port
  // a tunnel or load balancer: it accepts at once, and closes when it cannot reach the server
  const proxy = await startProxy(t, port)
  const client = startClient(t, src, proxy.port)
  await waitForMirror(src, mirror)
  server.kill('SIGKILL')
  await server.exited
  writeFileSync(join(src, 'while-down'), 'second')
  // wait for more closes without a greeting than a client refuses before its first greeting (3)
  await waitUntil(() => proxy.connections >= 5, 20_000, () => `only ${proxy.connections} connections through the proxy`)
  t.equal(client.child.exitCode, null, 'the client still runs')
  server = await startServer(t, mirror, ['--port', String(port)])
  await waitForMirror(src, mirror, 30_000)
  t.match(client.output(), /without greeting.*retrying/, 'the client said what it saw')
})

t.test('sfmd refuses a non-empty folder that is not a mirror, unless --adopt', async (t) => {
  const dir = testdir(t, { mirror: { 'stray.txt': 'not from sfm' }, src: { 'f.txt': 'from the client' } })
  const refused = await startServer(t, join(dir, 'mirror')).catch((err: Error) => err)
  t.ok(refused instanceof Error)
  t.match(String(refused), /not empty and is not an sfm mirror/)
  const server = await startServer(t, join(dir, 'mirror'), ['--adopt'])
  t.equal((await syncOnce(t, join(dir, 'src'), server.port)).code, 0)
  t.equal(mirrorDifference(join(dir, 'src'), join(dir, 'mirror')), null, 'what the client does not have is gone')
})
