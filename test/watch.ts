import t, { type Test } from 'tap'
import { execFileSync } from 'node:child_process'
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as os from 'node:os'
import { join } from 'node:path'
import { type WatchError, collapse, isWatchLimit, watchFolder, watchLimitError } from '../src/client/watch.js'
import { sleep, waitUntil } from './helpers/procs.js'
import { testdir } from './helpers/testdir.js'

const DEADLINE_MS = 5_000

const waitFor = (condition: () => boolean, what: string): Promise<void> => waitUntil(condition, DEADLINE_MS, () => what)

// Starts a watch on `root` that records everything it reports, and closes it at the end of the test.
async function record(t: Test, root: string, opts: Parameters<typeof watchFolder>[3] = {}) {
  const seen = new Set<string>()
  const batches: string[][] = []
  const errors: WatchError[] = []
  const watch = await watchFolder(
    root,
    paths => {
      batches.push(paths)
      for (const path of paths) seen.add(path)
    },
    err => errors.push(err),
    opts,
  )
  t.teardown(() => watch.close())
  const sees = (path: string) => waitFor(() => seen.has(path), `an event for ${JSON.stringify(path)}`)
  return { seen, batches, errors, watch, sees }
}

t.test('reports a file write', async t => {
  const root = testdir(t, { dir: { f: 'one' } })
  const w = await record(t, root)
  fs.writeFileSync(join(root, 'dir/f'), 'two')
  await w.sees('dir/f')
  t.same(w.errors, [])
})

t.test('reports at least the top of a tree made with mkdir -p', async t => {
  const root = testdir(t, {})
  const w = await record(t, root)
  execFileSync('sh', ['-c', 'mkdir -p a/b/c && echo x > a/b/c/f'], { cwd: root })
  await w.sees('a')
  t.ok([...w.seen].every(path => path === 'a' || path.startsWith('a/')), 'nothing outside a')
})

t.test('keeps watching inside a tree that was moved in whole', async t => {
  // @parcel/watcher only watches the top directory of such a tree; the adapter covers the rest.
  const root = testdir(t, {})
  const outside = fs.mkdtempSync(join(os.tmpdir(), 'sfm-outside-'))
  t.teardown(() => fs.rmSync(outside, { recursive: true, force: true }))
  fs.mkdirSync(join(outside, 't/u/v'), { recursive: true })
  fs.writeFileSync(join(outside, 't/u/v/f'), '1')
  const w = await record(t, root)
  fs.renameSync(join(outside, 't'), join(root, 't'))
  await w.sees('t')
  // The cover is set up after the first report; writes keep coming until one is seen, within the deadline.
  await waitFor(() => {
    fs.writeFileSync(join(root, 't/u/v/f'), String(Date.now()))
    return w.seen.has('t/u/v/f')
  }, 'a write two levels down to be reported')
  fs.mkdirSync(join(root, 't/u/v/w'))
  await w.sees('t/u/v/w')
  fs.writeFileSync(join(root, 't/u/g'), 'x')
  await w.sees('t/u/g')
  t.same(w.errors, [])
})

t.test('keeps watching inside a tree made with mkdir -p', async t => {
  const root = testdir(t, {})
  const w = await record(t, root)
  execFileSync('mkdir', ['-p', 'a/b/c/d/e'], { cwd: root })
  await w.sees('a')
  await waitFor(() => {
    fs.writeFileSync(join(root, 'a/b/c/d/e/f'), String(Date.now()))
    return w.seen.has('a/b/c/d/e/f')
  }, 'a write at the bottom to be reported')
})

t.test('a rename shows both names', async t => {
  const root = testdir(t, { old: 'x', dir: { inner: 'y' } })
  const w = await record(t, root)
  fs.renameSync(join(root, 'old'), join(root, 'new'))
  fs.renameSync(join(root, 'dir'), join(root, 'moved'))
  await waitFor(() => ['old', 'new', 'dir', 'moved'].every(path => w.seen.has(path)), 'both names of both renames')
  t.pass('saw old, new, dir and moved')
})

t.test('deleting the root gives SFM_ROOT_GONE', async t => {
  const base = testdir(t, { root: { a: { b: 'b' }, c: 'c' } })
  const root = join(base, 'root')
  const w = await record(t, root)
  fs.rmSync(root, { recursive: true })
  await waitFor(() => w.errors.length > 0, 'an error')
  t.equal(w.errors.length, 1)
  t.equal(w.errors[0]!.code, 'SFM_ROOT_GONE')
  t.match(w.errors[0]!.message, /removed, moved away or unmounted/)
  t.same(w.batches, [], 'the deletions in the same batch are not reported as changes')
})

t.test('moving the root away gives SFM_ROOT_GONE', async t => {
  const base = testdir(t, { root: { a: 'a' } })
  const w = await record(t, join(base, 'root'))
  fs.renameSync(join(base, 'root'), join(base, 'elsewhere'))
  await waitFor(() => w.errors.length > 0, 'an error')
  t.equal(w.errors[0]!.code, 'SFM_ROOT_GONE')
})

t.test('renaming a parent of the root gives SFM_ROOT_GONE (no event: the timer sees it)', async t => {
  const base = testdir(t, { parent: { root: { a: 'a' } } })
  const w = await record(t, join(base, 'parent/root'), { rootCheckMs: 50 })
  fs.renameSync(join(base, 'parent'), join(base, 'parent2'))
  await waitFor(() => w.errors.length > 0, 'an error')
  t.equal(w.errors[0]!.code, 'SFM_ROOT_GONE')
})

t.test('a root replaced by a new directory gives SFM_ROOT_GONE', async t => {
  const base = testdir(t, { root: {} })
  const root = join(base, 'root')
  const w = await record(t, root, { rootCheckMs: 50 })
  fs.rmdirSync(root)
  fs.mkdirSync(root)
  fs.writeFileSync(join(root, 'f'), 'x')
  await waitFor(() => w.errors.length > 0, 'an error')
  t.equal(w.errors[0]!.code, 'SFM_ROOT_GONE')
})

t.test('unmounting the root gives SFM_ROOT_GONE', async t => {
  const root = testdir(t, {})
  try {
    execFileSync('mount', ['-t', 'tmpfs', 'sfm-test', root], { stdio: 'ignore' })
  } catch {
    /* c8 ignore next 2: mounting needs root */
    t.comment('skipped: cannot mount here')
    return
  }
  t.teardown(() => {
    try {
      execFileSync('umount', [root], { stdio: 'ignore' })
    } catch {}
  })
  const w = await record(t, root, { rootCheckMs: 50 })
  fs.writeFileSync(join(root, 'f'), 'x')
  await w.sees('f')
  execFileSync('umount', ['-l', root])
  await waitFor(() => w.errors.length > 0, 'an error')
  t.equal(w.errors[0]!.code, 'SFM_ROOT_GONE')
})

t.test('a missing root or a file is SFM_ROOT_GONE at start', async t => {
  const base = testdir(t, { file: 'x' })
  const nothing = () => {}
  await t.rejects(watchFolder(join(base, 'missing'), nothing, nothing), { code: 'SFM_ROOT_GONE' })
  await t.rejects(watchFolder(join(base, 'file'), nothing, nothing), { code: 'SFM_ROOT_GONE' })
})

t.test('a root given as a symlink is watched through it', async t => {
  const base = testdir(t, { real: {} })
  fs.symlinkSync('real', join(base, 'link'))
  const w = await record(t, join(base, 'link'))
  fs.writeFileSync(join(base, 'real/f'), 'x')
  await w.sees('f')
})

t.test('close() stops events', async t => {
  const root = testdir(t, {})
  const w = await record(t, root)
  fs.writeFileSync(join(root, 'before'), 'x')
  await w.sees('before')
  await w.watch.close()
  const count = w.batches.length
  fs.writeFileSync(join(root, 'after'), 'x')
  fs.mkdirSync(join(root, 'dir'))
  await sleep(300) // several of the library's 50 ms batches
  t.equal(w.batches.length, count, 'no report after close()')
  await w.watch.close()
  t.pass('close() twice is fine')
})

t.test('close() in the middle of a stream of events: nothing is reported after it', async t => {
  // Reports are on their way all the time here, so close() often lands while one is between its root
  // check and the caller: it must be dropped there too.
  for (let round = 0; round < 8; round++) {
    const root = testdir(t, {})
    const w = await record(t, root)
    let written = 0
    const writer = setInterval(() => fs.writeFileSync(join(root, `f${written++}`), 'x'), 2)
    let busy = true
    const occupy = () => void crypto.pbkdf2('x', 'y', 20_000, 16, 'sha256', () => busy && occupy())
    for (let i = 0; i < 4; i++) occupy()
    try {
      await waitFor(() => w.batches.length >= 3 + round, 'a few reports')
      await w.watch.close()
      const count = w.batches.length
      await sleep(150)
      t.equal(w.batches.length, count, `round ${round}: no report after close()`)
    } finally {
      clearInterval(writer)
      busy = false
    }
  }
})

t.test('ignores a top-level .sfm, not a/.sfm or .sfmx', async t => {
  const root = testdir(t, { a: {} })
  const w = await record(t, root)
  fs.mkdirSync(join(root, '.sfm'))
  fs.writeFileSync(join(root, '.sfm/x'), 'x')
  fs.writeFileSync(join(root, '.sfmx'), 'x')
  fs.mkdirSync(join(root, 'a/.sfm'))
  await w.sees('.sfmx')
  await w.sees('a/.sfm')
  fs.writeFileSync(join(root, 'a/.sfm/y'), 'y')
  await w.sees('a/.sfm/y')
  t.notOk([...w.seen].some(path => path === '.sfm' || path.startsWith('.sfm/')))
})

t.test('the ignore option leaves subtrees out', async t => {
  const root = testdir(t, { node_modules: { x: {} }, src: {} })
  const w = await record(t, root, { ignore: ['node_modules'] })
  fs.writeFileSync(join(root, 'node_modules/x/f'), 'x')
  fs.writeFileSync(join(root, 'node_modules/g'), 'x')
  fs.writeFileSync(join(root, 'src/f'), 'x')
  await w.sees('src/f')
  await sleep(150)
  t.notOk([...w.seen].some(path => path.startsWith('node_modules')))
  await t.rejects(watchFolder(root, () => {}, () => {}, { ignore: ['../x'] }), { code: 'SFM_ERR_BAD_PATH' })
})

t.test('a name that is not UTF-8 does not break the watch', async t => {
  const root = testdir(t, {})
  const w = await record(t, root)
  fs.writeFileSync(Buffer.concat([Buffer.from(`${root}/`), Buffer.from([0xff, 0x61])]), 'x')
  fs.writeFileSync(join(root, 'after'), 'x')
  await w.sees('after')
  t.same(w.errors, [])
})

t.test('the watch limit', async t => {
  t.ok(isWatchLimit("inotify_add_watch on '/x/d6' failed: No space left on device"), "the library's message")
  t.ok(isWatchLimit('ENOSPC: System limit for number of file watchers reached'), "Node's message")
  t.notOk(isWatchLimit('No such file or directory'))
  const err = await watchLimitError()
  t.equal(err.code, 'SFM_WATCH_LIMIT')
  t.match(err.message, /sudo sysctl fs\.inotify\.max_user_watches=\d+/)
  t.match(err.message, /\/etc\/sysctl\.d\//)
  const current = Number(fs.readFileSync('/proc/sys/fs/inotify/max_user_watches', 'utf8'))
  if (current < 262_144) t.match(err.message, /max_user_watches=524288/)
})

t.test('maps a subscribe that fails on the watch limit to SFM_WATCH_LIMIT', async t => {
  const { watchFolder: mocked } = await t.mockImport<typeof import('../src/client/watch.js')>('../src/client/watch.js', {
    '@parcel/watcher': {
      default: {
        subscribe: async (dir: string) => {
          throw new Error(`inotify_add_watch on '${dir}/d6' failed: No space left on device`)
        },
      },
    },
  })
  const root = testdir(t, {})
  await t.rejects(mocked(root, () => {}, () => {}), { code: 'SFM_WATCH_LIMIT', message: /sudo sysctl/ })
})

t.test('maps an error reported while watching', async t => {
  const root = testdir(t, {})
  const w = await withMockedLibrary(t, root)
  const real = fs.realpathSync(root)
  w.deliver(null, [
    { path: `${real}/a`, type: 'create' },
    { path: `${real}/a`, type: 'update' },
    { path: `${real}/a/b`, type: 'update' },
    { path: '/elsewhere/x', type: 'update' },
    { path: `${real}x/y`, type: 'update' },
    { path: `${real}/.sfm/x`, type: 'update' },
    { path: `${real}/c//d`, type: 'update' },
    { path: real, type: 'update' },
  ])
  await waitFor(() => w.batches.length > 0, 'a report')
  t.same(w.batches, [['a']], 'deduplicated, collapsed, and only valid wire paths below the root')
  w.deliver(new Error('Unable to poll: Bad file descriptor'), [])
  await waitFor(() => w.errors.length > 0, 'an error')
  t.equal(w.errors[0]!.code, 'SFM_WATCH_FAILED')
  t.match(w.errors[0]!.message, /Unable to poll/)
  w.deliver(null, [{ path: `${real}/late`, type: 'create' }])
  await sleep(50)
  t.same(w.batches, [['a']], 'nothing after an error')
  t.equal(w.errors.length, 1, 'one error only')
})

t.test('maps a watch-limit error reported while watching', async t => {
  let callback: ((err: Error | null, events: unknown[]) => void) | null = null
  const { watchFolder: mocked } = await t.mockImport<typeof import('../src/client/watch.js')>('../src/client/watch.js', {
    '@parcel/watcher': {
      default: {
        subscribe: async (_dir: string, fn: typeof callback) => {
          callback = fn
          return { unsubscribe: async () => {} }
        },
      },
    },
  })
  const errors: WatchError[] = []
  const watch = await mocked(testdir(t, {}), () => {}, err => errors.push(err))
  t.teardown(() => watch.close())
  callback!(new Error("inotify_add_watch on '/x' failed: No space left on device"), [])
  await waitFor(() => errors.length > 0, 'an error')
  t.equal(errors[0]!.code, 'SFM_WATCH_LIMIT')
})

t.test('collapse keeps the topmost paths, sorted', async t => {
  t.same(collapse(['a/b', 'a', 'a-b', 'c/d', 'c/d/e', 'b']), ['a', 'a-b', 'b', 'c/d'])
  t.same(collapse([]), [])
})

// The library mocked (it reports only what the test says), with the rest real: what is reported beyond
// that comes from the prompt hints of the directories it reported (hot-dirs.ts).
async function withMockedLibrary(t: Test, root: string) {
  let callback: ((err: Error | null, events: { path: string; type: string }[]) => void) | null = null
  const { watchFolder: mocked } = await t.mockImport<typeof import('../src/client/watch.js')>('../src/client/watch.js', {
    '@parcel/watcher': {
      default: {
        subscribe: async (_dir: string, fn: typeof callback) => {
          callback = fn
          return { unsubscribe: async () => {} }
        },
      },
    },
  })
  const batches: string[][] = []
  const errors: WatchError[] = []
  const watch = await mocked(root, paths => batches.push(paths), err => errors.push(err))
  t.teardown(() => watch.close())
  const real = fs.realpathSync(root)
  // Events (or an error) as the library hands them over, absolute paths and all.
  const deliver = (err: Error | null, events: { path: string; type: string }[]) => callback!(err, events)
  const library = (events: [string, string][]) => deliver(null, events.map(([path, type]) => ({ path: `${real}/${path}`, type })))
  const seen = (path: string, from = 0) => batches.slice(from).some(batch => batch.includes(path))
  // The directory's watch starts a moment after the library's report: write until a hint shows it is there.
  const untilHinted = async (dir: string) => {
    const deadline = Date.now() + DEADLINE_MS
    for (let n = 0; !batches.some(batch => batch.some(path => path.startsWith(`${dir}/probe`))); n++) {
      if (Date.now() > deadline) throw new Error(`no hint for a new file in ${dir}`)
      fs.writeFileSync(join(root, `${dir}/probe${n}`), 'x')
      await sleep(50)
    }
  }
  return { batches, errors, deliver, library, seen, untilHinted }
}

t.test('changes in a directory the library reported lately are reported before its next batch', async t => {
  const root = testdir(t, { d: { x: 'x' } })
  const w = await withMockedLibrary(t, root)
  w.library([['d/x', 'update']])
  await waitFor(() => w.seen('d/x'), 'the library batch')
  await w.untilHinted('d')
  const from = w.batches.length
  fs.unlinkSync(join(root, 'd/probe0'))
  await waitFor(() => w.seen('d/probe0', from), 'the delete, from a hint')
  t.same(w.errors, [])
})

t.test("the library's batch repeating deletes that hints reported is reported, and so are deletes it left out", async t => {
  const root = testdir(t, { d: { a: 'a', b: 'b', c: 'c', x: 'x' } })
  const w = await withMockedLibrary(t, root)
  w.library([['d/x', 'update']])
  await waitFor(() => w.seen('d/x'), 'the library batch')
  await w.untilHinted('d')
  for (const name of ['a', 'b', 'c']) {
    const from = w.batches.length
    fs.unlinkSync(join(root, `d/${name}`))
    await waitFor(() => w.seen(`d/${name}`, from), `the delete of d/${name}`)
  }
  const from = w.batches.length
  w.library([['d/a', 'delete'], ['d/b', 'delete'], ['d/c', 'delete'], ['d/x', 'update']])
  await waitFor(() => w.seen('d/x', from), 'the batch')
  t.ok(w.seen('d/a', from) && w.seen('d/c', from), 'repeated as the library said')
  t.same(w.errors, [])
})
