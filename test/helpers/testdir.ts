// t.testdir(), removed only after the test's teardowns have run.
//
// tap's fixture plugin and its teardown plugin both wrap the test's end, each once, in the order they
// are first used. After `t.testdir()` then `t.teardown(stop)`, the directory is removed first and the
// server or mirror that writes into it is stopped after: the removal then races with its last writes
// and fails (ENOTEMPTY, seen in test/mirror.ts). A teardown registered first puts the two in order.
import type { Test } from 'tap'

type Fixture = Parameters<Test['testdir']>[0]

export function testdir(t: Pick<Test, 'teardown' | 'testdir'>, content?: Fixture): string {
  t.teardown(() => {})
  return t.testdir(content)
}
