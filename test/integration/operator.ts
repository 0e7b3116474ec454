// What an operator sees: --dry-run, the progress of the first reconcile (in each mode, the terminal one
// forced), the JSON summary, statistics on SIGUSR1, and --poll instead of the watcher.
import { randomBytes } from 'node:crypto'
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { mirrorDifference, sleep, startClient, startServer, syncOnce, waitForMirror } from '../helpers/procs.js'
import { testdir } from '../helpers/testdir.js'

const MiB = 1 << 20

t.test('--dry-run shows what would be uploaded, sent and deleted, and changes nothing', async (t) => {
  const dir = testdir(t)
  const src = join(dir, 'src')
  const mirror = join(dir, 'mirror')
  mkdirSync(join(src, 'sub'), { recursive: true })
  const data = randomBytes(200_000)
  writeFileSync(join(src, 'a.bin'), data)
  writeFileSync(join(src, 'sub/b.txt'), 'b')
  const server = await startServer(t, mirror)
  const dry = await syncOnce(t, src, server.port, ['--dry-run'])
  t.equal(dry.code, 0, dry.output)
  t.match(dry.stdout, /upload {3}a\.bin \(195\.3 KiB, would send 195\.3 KiB\)/)
  t.match(dry.stdout, /mkdir {4}sub/)
  t.match(dry.stdout, /dry run: would upload 2 file\(s\).*nothing was changed/)
  t.same(readdirSync(mirror), ['.sfm'], 'the mirror is still empty')

  t.equal((await syncOnce(t, src, server.port)).code, 0)
  writeFileSync(join(src, 'copy.bin'), data) // same bytes: dedup means nothing to send
  rmSync(join(src, 'sub'), { recursive: true })
  const again = await syncOnce(t, src, server.port, ['--dry-run'])
  t.match(again.stdout, /upload {3}copy\.bin \(195\.3 KiB, would send 0 B\)/)
  t.match(again.stdout, /delete {3}sub/)
  t.notOk(mirrorDifference(src, mirror) === null, 'still not applied')

  t.equal((await syncOnce(t, src, server.port)).code, 0)
  const same = await syncOnce(t, src, server.port, ['--dry-run'])
  t.equal(same.code, 0, same.output)
  t.match(same.stdout, /^dry run: would upload 0 file\(s\) \(0 B, sending 0 B\), delete 0 entries, and make 0 other change\(s\); nothing was changed$/m, 'nothing to do: says so')
})

for (const mode of ['tty', 'lines', 'json'] as const) {
  t.test(`the first reconcile shows its progress (--progress ${mode})`, async (t) => {
    const dir = testdir(t)
    const src = join(dir, 'src')
    mkdirSync(src)
    // enough to take a few seconds, so the progress shows more than once
    for (let i = 0; i < 24; i++) writeFileSync(join(src, `f${i}`), randomBytes(8 * MiB))
    const server = await startServer(t, join(dir, 'mirror'))
    const args = ['--progress', mode, ...(mode === 'json' ? ['--json'] : [])]
    const client = startClient(t, src, server.port, args)
    await waitForMirror(src, join(dir, 'mirror'), 120_000)
    await client.waitForOutput(mode === 'json' ? /"summary"/ : /synced 24 file/, 20_000)
    const err = client.stderr()
    if (mode === 'tty') {
      t.match(err, /\r\x1b\[Kreconciling: \d+\/24 files, .* of 192\.0 MiB, .*\/s/, 'a live line, rewritten in place')
    } else if (mode === 'lines') {
      t.match(err, /^reconciling: \d+\/24 files/m, 'plain lines')
    } else {
      const progress = err.split('\n').filter((l) => l.startsWith('{"progress"')).map((l) => JSON.parse(l).progress)
      t.ok(progress.length > 0, 'JSON progress objects')
      t.equal(progress[0].totalFiles, 24)
      t.equal(progress[0].totalBytes, 24 * 8 * MiB)
      const summary = JSON.parse(client.stdout().trim().split('\n').pop()!).summary
      t.equal(summary.files, 24)
      t.equal(summary.bytes, 24 * 8 * MiB)
      t.ok(summary.wireBytesSent >= summary.bytes, 'the summary has the bytes on the wire')
    }
  })
}

t.test('SIGUSR1 prints the statistics so far; --poll works without the watcher', async (t) => {
  const dir = testdir(t)
  const src = join(dir, 'src')
  const mirror = join(dir, 'mirror')
  mkdirSync(src)
  writeFileSync(join(src, 'a'), 'a')
  const server = await startServer(t, mirror)
  const client = startClient(t, src, server.port, ['--poll', '1'])
  await waitForMirror(src, mirror)
  writeFileSync(join(src, 'b'), 'found by the next rescan')
  await waitForMirror(src, mirror, 10_000)
  const before = client.stdout().length
  // The mirror shows b a moment before the client has the server's confirmation, which is what the
  // statistics count: ask again until they include it (at most 10 s).
  const deadline = Date.now() + 10_000
  for (let asked = 0; asked < 30 && !/synced 2 file\(s\)/.test(client.stdout().slice(before)) && Date.now() < deadline; asked++) {
    client.kill('SIGUSR1')
    await sleep(300)
  }
  t.match(client.stdout().slice(before), /synced 2 file\(s\) \(\d+ B\).*sent .* on the wire, saved .* by dedup/)
})
