// When sfmd and sfmc hand free memory back: after enough bytes, once quiet, then after the next major GC.
import t from 'tap'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { MemoryTrim, type MajorGcs } from '../src/util/memory-trim.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Major GCs on demand, and how many subscriptions are open. */
function fakeGcs(): { gcs: MajorGcs; fire: () => void; open: () => number } {
  const subs = new Set<() => void>()
  return {
    gcs: (fn) => {
      subs.add(fn)
      return () => subs.delete(fn)
    },
    fire: () => [...subs].forEach((fn) => fn()),
    open: () => subs.size,
  }
}

t.test('no trim below the threshold; past it, one after the quiet time, one more after the next major GC', async (t) => {
  // every check has 100 ms or more of margin on either side, for a loaded machine
  const at: number[] = []
  const t0 = Date.now()
  const gc = fakeGcs()
  const m = new MemoryTrim(() => at.push(Date.now() - t0), { afterBytes: 100, quietMs: 400, gcWaitMs: 10_000 }, gc.gcs)
  t.teardown(() => m.stop())
  m.moved(60)
  gc.fire()
  await sleep(50)
  m.moved(60) // 120 bytes: the countdown starts (a trim at about 450 ms)
  await sleep(150)
  m.moved(10) // more bytes during the quiet time restart it (about 600 ms)
  await sleep(300)
  t.same(at, [], 'not while bytes keep coming, and a GC before the threshold does nothing')
  await sleep(250)
  t.equal(at.length, 1, 'one trim once it was quiet')
  t.ok(at[0]! >= 595, `at ${at[0]} ms: after the last bytes plus the quiet time`)
  t.equal(gc.open(), 1, 'waiting for the next major GC')
  gc.fire()
  t.equal(at.length, 2, 'a second trim right after it')
  t.equal(gc.open(), 0, 'and no more waiting')
  gc.fire()
  t.equal(at.length, 2, 'later GCs do nothing')
  m.moved(50)
  await sleep(500)
  t.equal(at.length, 2, 'the count starts again from zero after a trim')
})

t.test('the wait for a GC ends by itself, and stop() cancels everything', async (t) => {
  let trims = 0
  const gc = fakeGcs()
  const m = new MemoryTrim(() => trims++, { afterBytes: 1, quietMs: 20, gcWaitMs: 100 }, gc.gcs)
  m.moved(5)
  await sleep(200)
  t.equal(trims, 1)
  t.equal(gc.open(), 0, 'no GC within the wait: the subscription ended')
  m.moved(5)
  await sleep(60)
  t.equal(gc.open(), 1)
  m.stop()
  t.equal(gc.open(), 0)
  gc.fire()
  m.moved(5)
  m.stop()
  await sleep(80)
  t.equal(trims, 2, 'nothing after stop()')
})

t.test('the default GC subscription sees a real major GC', async (t) => {
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  let trims = 0
  const m = new MemoryTrim(() => trims++, { afterBytes: 1, quietMs: 10, gcWaitMs: 10_000 })
  t.teardown(() => m.stop())
  m.moved(5)
  await sleep(100)
  t.equal(trims, 1, 'the trim after the quiet time')
  gc() // a full GC; the observer hears of it in a later turn
  for (let i = 0; i < 50 && trims < 2; i++) await sleep(20)
  t.equal(trims, 2, 'and the one after the GC')
})
