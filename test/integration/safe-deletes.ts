// The guards against mass deletes from an empty, unmounted or replaced folder, with real processes:
// each holds changes back with a message, lets them go by itself when the folder is back, and yields
// to an explicit flag.
import { execFileSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { mirrorDifference, sleep, startClient, startServer, syncOnce, waitForMirror, waitUntil } from '../helpers/procs.js'
import { testdir } from '../helpers/testdir.js'

const HELD = 5 // EXIT.HELD

function fill(dir: string, n: number): void {
  mkdirSync(join(dir, 'sub'), { recursive: true })
  for (let i = 0; i < n; i++) writeFileSync(join(dir, i % 2 ? `sub/f${i}` : `f${i}`), `file ${i}\n`)
}

const countFiles = (dir: string): number =>
  readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile() && !e.parentPath.includes('.sfm')).length

t.test('an empty folder is not mirrored over a full mirror without --allow-empty', async (t) => {
  const dir = testdir(t)
  const src = join(dir, 'src')
  const mirror = join(dir, 'mirror')
  fill(src, 30)
  const server = await startServer(t, mirror)
  t.equal((await syncOnce(t, src, server.port)).code, 0)
  for (const name of readdirSync(src)) rmSync(join(src, name), { recursive: true })
  const held = await syncOnce(t, src, server.port)
  t.equal(held.code, HELD, 'exits with the held-back code')
  t.match(held.output, /is empty but the mirror has \d+ entries/)
  t.match(held.output, /--allow-empty/)
  t.equal(countFiles(mirror), 30, 'nothing deleted')
  const allowed = await syncOnce(t, src, server.port, ['--allow-empty'])
  t.equal(allowed.code, 0, allowed.output)
  t.equal(mirrorDifference(src, mirror), null, 'with the flag the mirror is emptied')
})

t.test('a pass that would delete more than --max-delete holds its deletes back, not its uploads', async (t) => {
  const dir = testdir(t)
  const src = join(dir, 'src')
  const mirror = join(dir, 'mirror')
  fill(src, 100)
  const server = await startServer(t, mirror)
  t.equal((await syncOnce(t, src, server.port)).code, 0)
  for (let i = 0; i < 80; i++) rmSync(join(src, i % 2 ? `sub/f${i}` : `f${i}`))
  writeFileSync(join(src, 'new-file'), 'still uploaded')
  const held = await syncOnce(t, src, server.port)
  t.equal(held.code, HELD)
  t.match(held.output, /would delete 80 of the mirror's \d+ entries, more than --max-delete 50%/)
  t.equal(countFiles(mirror), 101, 'no delete went through; the new file did')
  t.ok(existsSync(join(mirror, 'new-file')))
  t.equal((await syncOnce(t, src, server.port, ['--max-delete', '100'])).code, 0, 'a limit above the count lets them go')
  t.equal(mirrorDifference(src, mirror), null)
})

t.test('in watch mode held deletes wait, and go away by themselves when the files come back', async (t) => {
  const dir = testdir(t)
  const src = join(dir, 'src')
  const mirror = join(dir, 'mirror')
  fill(join(src, 'data'), 100)
  writeFileSync(join(src, 'top'), 'top')
  const server = await startServer(t, mirror)
  const client = startClient(t, src, server.port)
  await waitForMirror(src, mirror)
  let lowest = countFiles(mirror)
  let watching = true
  const monitor = (async () => {
    while (watching) {
      lowest = Math.min(lowest, countFiles(mirror))
      await sleep(20)
    }
  })()
  // Everything at once, as one event: the directory moved out of the tree. (rm -rf would delete the
  // files first, and the watcher may report a first few of them alone: under the limit, they go.)
  renameSync(join(src, 'data'), join(dir, 'gone'))
  await client.waitForOutput(/held back/, 15_000)
  renameSync(join(dir, 'gone'), join(src, 'data'))
  await waitForMirror(src, mirror, 30_000)
  await client.waitForOutput(/no longer needed/, 15_000)
  watching = false
  await monitor
  t.equal(lowest, 101, 'the mirror never lost a file')
})

t.test('a mass delete reported in several batches is held once the batches add up past the limit', async (t) => {
  const dir = testdir(t)
  const src = join(dir, 'src')
  const mirror = join(dir, 'mirror')
  fill(src, 100)
  const server = await startServer(t, mirror)
  const client = startClient(t, src, server.port)
  await waitForMirror(src, mirror)
  const names = readdirSync(src, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name))
  for (const p of names.slice(0, 30)) rmSync(p) // 30 of 100: under 50%, goes ahead
  await waitUntil(() => countFiles(mirror) === 70, 15_000, () => `mirror has ${countFiles(mirror)} files`)
  for (const p of names.slice(30)) rmSync(p) // 70 more within the window: 100 in all, held
  await client.waitForOutput(/would delete 100 of the mirror's/, 15_000)
  await sleep(1_000)
  t.equal(countFiles(mirror), 70, 'the second batch was held')
})

t.test('a folder replaced between runs is refused until it is back, or accepted with --accept-new-root', async (t) => {
  const dir = testdir(t)
  const src = join(dir, 'src')
  const mirror = join(dir, 'mirror')
  fill(src, 40)
  const server = await startServer(t, mirror)
  t.equal((await syncOnce(t, src, server.port)).code, 0)
  renameSync(src, join(dir, 'original'))
  mkdirSync(src)
  writeFileSync(join(src, 'other'), 'another folder at the same path')
  const held = await syncOnce(t, src, server.port)
  t.equal(held.code, HELD)
  t.match(held.output, /not the folder this client mirrored before/)
  t.match(held.output, /--accept-new-root/)
  t.equal(countFiles(mirror), 40, 'nothing changed')
  rmSync(src, { recursive: true })
  renameSync(join(dir, 'original'), src)
  t.equal((await syncOnce(t, src, server.port)).code, 0, 'the original is back: accepted again')
  rmSync(src, { recursive: true })
  mkdirSync(src)
  writeFileSync(join(src, 'other'), 'accepted on purpose')
  const accepted = await syncOnce(t, src, server.port, ['--accept-new-root', '--max-delete', 'all'])
  t.equal(accepted.code, 0, accepted.output)
  t.equal(mirrorDifference(src, mirror), null)
})

t.test('an unmounted folder stops the client; a restarted client waits until it is mounted again', async (t) => {
  // Not testdir(t): tap removes that before later teardowns run, and a mounted folder cannot be removed.
  const dir = mkdtempSync(join(tmpdir(), 'sfm-unmount-'))
  const data = join(dir, 'data')
  const src = join(dir, 'src')
  const mirror = join(dir, 'mirror')
  const unmount = () => {
    try {
      execFileSync('umount', [src], { stdio: 'ignore' })
    } catch {
      // not mounted
    }
  }
  t.teardown(() => {
    unmount()
    rmSync(dir, { recursive: true, force: true })
  })
  fill(data, 30)
  mkdirSync(src)
  try {
    execFileSync('mount', ['--bind', data, src], { stdio: 'ignore' })
  } catch {
    t.pass('the bind-mount test is skipped', { skip: 'bind mounts are not allowed here' })
    return
  }
  const server = await startServer(t, mirror)
  const first = startClient(t, src, server.port)
  await waitForMirror(src, mirror)
  unmount()
  const code = await Promise.race([first.exited, sleep(15_000).then(() => 'running')])
  t.not(code, 0, 'the client stops with an error')
  t.not(code, 'running')
  t.equal(countFiles(mirror), 30, 'nothing deleted')
  const second = startClient(t, src, server.port)
  await second.waitForOutput(/not the folder this client mirrored before/, 15_000)
  await sleep(500)
  t.equal(countFiles(mirror), 30, 'still nothing deleted while it waits')
  execFileSync('mount', ['--bind', data, src])
  writeFileSync(join(src, 'after-remount'), 'x')
  await waitUntil(() => existsSync(join(mirror, 'after-remount')), 20_000, () => second.output())
  await waitForMirror(src, mirror)
  second.kill('SIGTERM')
  t.equal(await second.exited, 0, 'stops cleanly')
  unmount()
})
