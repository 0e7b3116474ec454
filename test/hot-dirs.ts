import t, { type Test } from 'tap'
import * as fs from 'node:fs'
import { join } from 'node:path'
import { HotDirs, type HotDirsOptions } from '../src/client/hot-dirs.js'
import { sleep, waitUntil } from './helpers/procs.js'
import { testdir } from './helpers/testdir.js'

const DEADLINE_MS = 5_000

const waitFor = (condition: () => boolean, what: string): Promise<void> => waitUntil(condition, DEADLINE_MS, () => what)

// HotDirs on `root` that records its hints, closed at the end of the test.
function record(t: Test, root: string, opts: Partial<HotDirsOptions> = {}) {
  const hints: Array<{ wire: string; maybeGone: boolean }> = []
  const hot = new HotDirs(fs.realpathSync(root), { accepts: () => true, onHint: (wire, maybeGone) => hints.push({ wire, maybeGone }), ...opts })
  t.teardown(() => hot.close())
  const watching = (dir: string) => waitFor(() => hot.watched().includes(dir), `a watch on ${JSON.stringify(dir)}`)
  return { hot, hints, watching }
}

t.test('hints each change in a touched directory, flagging what may be a delete', async t => {
  const root = testdir(t, { d: {} })
  const r = record(t, root)
  r.hot.touch('d')
  await r.watching('d')
  fs.writeFileSync(join(root, 'd/f'), 'x')
  await waitFor(() => r.hints.some(h => h.wire === 'd/f' && h.maybeGone), 'the create')
  const before = r.hints.length
  fs.unlinkSync(join(root, 'd/f'))
  await waitFor(() => r.hints.slice(before).some(h => h.wire === 'd/f' && h.maybeGone), 'the delete')
  t.notOk(r.hints.some(h => h.wire !== 'd/f'), 'nothing else')
})

t.test('watches the root as the directory ""', async t => {
  const root = testdir(t, {})
  const r = record(t, root)
  r.hot.touch('')
  await r.watching('')
  fs.writeFileSync(join(root, 'top'), 'x')
  await waitFor(() => r.hints.some(h => h.wire === 'top'), 'a hint for top')
})

t.test('a file written over and over is hinted only a few times a second; the library reports the rest', async t => {
  const root = testdir(t, { d: { log: '' } })
  const r = record(t, root)
  r.hot.touch('d')
  await r.watching('d')
  const start = Date.now()
  for (let i = 0; i < 20; i++) fs.appendFileSync(join(root, 'd/log'), `line ${i}\n`)
  await waitFor(() => r.hints.length > 0, 'a hint')
  await sleep(100)
  if (Date.now() - start < 1_000) t.ok(r.hints.length <= 3, `at most 3 hints within a second (got ${r.hints.length})`)
  t.ok(r.hints.every(h => h.wire === 'd/log' && !h.maybeGone), 'content changes only')
})

t.test('leaves out what `accepts` refuses', async t => {
  const root = testdir(t, { d: {} })
  const r = record(t, root, { accepts: wire => wire !== 'd/skip' })
  r.hot.touch('d')
  await r.watching('d')
  fs.writeFileSync(join(root, 'd/skip'), 'x')
  fs.writeFileSync(join(root, 'd/keep'), 'x')
  await waitFor(() => r.hints.some(h => h.wire === 'd/keep'), 'd/keep')
  t.notOk(r.hints.some(h => h.wire === 'd/skip'))
})

t.test('gives up a directory that was replaced, keeps one that was only changed', async t => {
  const root = testdir(t, { a: {}, b: {} })
  const r = record(t, root)
  r.hot.touch('a')
  r.hot.touch('b')
  await r.watching('a')
  await r.watching('b')
  fs.chmodSync(join(root, 'a'), 0o750)
  fs.rmSync(join(root, 'b'), { recursive: true })
  fs.mkdirSync(join(root, 'b'))
  await r.hot.recheck('a')
  await r.hot.recheck('b')
  t.same(r.hot.watched(), ['a'])
  r.hot.touch('b')
  await r.watching('b')
  fs.writeFileSync(join(root, 'b/f'), 'x')
  await waitFor(() => r.hints.some(h => h.wire === 'b/f'), 'a hint from the new b')
})

t.test('a missing directory or a file is not watched', async t => {
  const root = testdir(t, { f: 'x' })
  const r = record(t, root)
  r.hot.touch('f')
  r.hot.touch('missing')
  await sleep(100)
  t.same(r.hot.watched(), [])
})

t.test('gives up a directory that has been quiet for idleMs', async t => {
  const root = testdir(t, { d: {} })
  const r = record(t, root, { idleMs: 200 })
  r.hot.touch('d')
  await r.watching('d')
  await waitFor(() => r.hot.watched().length === 0, 'the idle directory to be given up')
  t.pass()
})

t.test('watches at most maxDirs, and does not give up a busy one for a new one', async t => {
  const root = testdir(t, { a: {}, b: {} })
  const r = record(t, root, { maxDirs: 1 })
  r.hot.touch('a')
  await r.watching('a')
  r.hot.touch('b')
  await sleep(100)
  t.same(r.hot.watched(), ['a'], 'a changed just now: b is left to the library')
})

t.test('close() stops the hints', async t => {
  const root = testdir(t, { d: {} })
  const r = record(t, root)
  r.hot.touch('d')
  await r.watching('d')
  r.hot.close()
  t.same(r.hot.watched(), [])
  fs.writeFileSync(join(root, 'd/after'), 'x')
  await sleep(100)
  t.same(r.hints, [])
  r.hot.touch('d')
  await sleep(50)
  t.same(r.hot.watched(), [], 'touch after close does nothing')
})
