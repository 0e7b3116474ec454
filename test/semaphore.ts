// Semaphore: units taken and given back, waiters served in the order they asked.
import t from 'tap'
import { Semaphore } from '../src/util/semaphore.js'

t.test('tryAcquire takes a free unit at once, and never one a waiter is owed', async (t) => {
  const s = new Semaphore(1)
  t.ok(s.tryAcquire())
  t.notOk(s.tryAcquire(), 'none left')
  const order: string[] = []
  const waiting = s.acquire().then(() => order.push('waiter'))
  s.release() // handed to the waiter, not made free
  t.notOk(s.tryAcquire(), 'the released unit goes to the waiter')
  await waiting
  t.strictSame(order, ['waiter'])
  s.release()
  t.ok(s.tryAcquire(), 'free again once the waiter gave it back')
})

t.test('waiters are served first come, first served', async (t) => {
  const s = new Semaphore(0)
  const order: number[] = []
  const all = [1, 2, 3].map((n) => s.acquire().then(() => order.push(n)))
  s.release()
  s.release()
  s.release()
  await Promise.all(all)
  t.strictSame(order, [1, 2, 3])
  t.notOk(s.tryAcquire())
})

t.test('drain wakes every waiter', async (t) => {
  const s = new Semaphore(0)
  let woken = 0
  const all = [s.acquire(), s.acquire()].map((p) => p.then(() => woken++))
  s.drain()
  await Promise.all(all)
  t.equal(woken, 2)
})
