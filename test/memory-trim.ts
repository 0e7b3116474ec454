// When sfmd hands free memory back: after enough bytes, once the connections are quiet, then again.
import t from 'tap'
import { MemoryTrim } from '../src/server/memory-trim.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

t.test('no trim below the threshold; past it, one after the quiet time and one more later', async (t) => {
  // every check has 100 ms or more of margin on either side, for a loaded machine
  const at: number[] = []
  const t0 = Date.now()
  const m = new MemoryTrim(() => at.push(Date.now() - t0), { afterBytes: 100, quietMs: 400, againMs: 600 })
  t.teardown(() => m.stop())
  m.received(60)
  await sleep(50)
  m.received(60) // 120 bytes: the countdown starts (a trim at about 450 ms)
  await sleep(150)
  m.received(10) // more bytes during the quiet time restart it (about 600 ms)
  await sleep(300)
  t.same(at, [], 'not while bytes keep coming')
  await sleep(250)
  t.equal(at.length, 1, 'one trim once it was quiet')
  t.ok(at[0]! >= 595, `at ${at[0]} ms: after the last bytes plus the quiet time`)
  await sleep(250)
  t.equal(at.length, 1, 'the second one waits')
  await sleep(500)
  t.equal(at.length, 2, 'and comes a while later')
  m.received(50)
  await sleep(500)
  t.equal(at.length, 2, 'the count starts again from zero after a trim')
})

t.test('stop() cancels what is scheduled', async (t) => {
  let trims = 0
  const m = new MemoryTrim(() => trims++, { afterBytes: 1, quietMs: 20, againMs: 20 })
  m.received(5)
  m.stop()
  await sleep(80)
  t.equal(trims, 0)
})
