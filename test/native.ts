import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import t from 'tap'
import {
  DIRECT_IO_ALIGN,
  alignedBuffer,
  closeFiles,
  copyFileRange,
  copyThrough,
  createUnnamedFiles,
  linkUnnamedFile,
  nativeAvailable,
  nativeLoadError,
  openUnnamedFile,
  readSmallFiles,
  setMtimeNs,
  setMtimeNsFd,
  splitNs,
  syncFileSystem,
  toLibuvTime,
  trimMemory,
  writeThroughAt,
} from '../src/fs/native.js'
import { testdir } from './helpers/testdir.js'

type NativeModule = typeof import('../src/fs/native.js')

const mtimeNs = (p: string): bigint => fs.lstatSync(p, { bigint: true }).mtimeNs
const atimeNs = (p: string): bigint => fs.lstatSync(p, { bigint: true }).atimeNs
const abs = (n: bigint): bigint => (n < 0n ? -n : n)

const EXACT = 1723456789123456789n
const OLD_NS = 1_000_000_000_000_000_000n // 2001-09-09, the value targets start from

// CI builds the addon at `npm install`; a missing addon must fail here, not pass silently.
t.ok(nativeAvailable, `the addon loads (${nativeLoadError?.message ?? 'ok'})`)
const skip = nativeAvailable ? false : 'addon not built'

t.test('splitNs floors towards minus infinity', async (t) => {
  t.same(splitNs(0n), { sec: 0n, nsec: 0 })
  t.same(splitNs(EXACT), { sec: 1723456789n, nsec: 123456789 })
  t.same(splitNs(-1n), { sec: -1n, nsec: 999_999_999 })
  t.same(splitNs(-1_000_000_000n), { sec: -1n, nsec: 0 })
  t.same(splitNs(-1_000_000_001n), { sec: -2n, nsec: 999_999_999 })
})

t.test('toLibuvTime aims half a microsecond past the nearest microsecond', async (t) => {
  t.equal(toLibuvTime(EXACT), '1723456789.123457500')
  t.equal(toLibuvTime(1723456789123456000n), '1723456789.123456500')
  t.equal(toLibuvTime(0n), '0.000000500')
  t.equal(toLibuvTime(-1n), '0.000000500')
  t.equal(toLibuvTime(-1000n), '-0.000001500')
  t.equal(toLibuvTime(-10_250_000_000n), '-10.250000500')
})

t.test('sets a file mtime to the exact nanosecond and leaves atime alone', { skip }, async (t) => {
  const p = join(testdir(t, { f: 'x' }), 'f')
  const atime = atimeNs(p)
  setMtimeNs(p, EXACT, { noFollow: false })
  t.equal(mtimeNs(p), EXACT)
  t.equal(atimeNs(p), atime)
})

t.test('sets mtimes before 1970 and after 2038', { skip }, async (t) => {
  const p = join(testdir(t, { f: 'x' }), 'f')
  for (const ns of [-1n, -1_000_000_000n, -123456789123456789n, 2n ** 33n * 1_000_000_000n + 7n]) {
    setMtimeNs(p, ns, { noFollow: false })
    t.equal(mtimeNs(p), ns, `mtime ${ns}`)
  }
})

t.test('sets a symlink own mtime with noFollow, not its target', { skip }, async (t) => {
  const dir = testdir(t, { target: 'x', link: t.fixture('symlink', 'target') })
  const target = join(dir, 'target')
  const link = join(dir, 'link')
  setMtimeNs(target, OLD_NS, { noFollow: false })
  setMtimeNs(link, EXACT, { noFollow: true })
  t.equal(mtimeNs(link), EXACT)
  t.equal(mtimeNs(target), OLD_NS)
})

t.test('follows a symlink without noFollow', { skip }, async (t) => {
  const dir = testdir(t, { target: 'x', link: t.fixture('symlink', 'target') })
  const before = mtimeNs(join(dir, 'link'))
  setMtimeNs(join(dir, 'link'), EXACT, { noFollow: false })
  t.equal(mtimeNs(join(dir, 'target')), EXACT)
  t.equal(mtimeNs(join(dir, 'link')), before)
})

t.test('sets a dangling symlink mtime with noFollow', { skip }, async (t) => {
  const link = join(testdir(t, { link: t.fixture('symlink', 'missing') }), 'link')
  setMtimeNs(link, EXACT, { noFollow: true })
  t.equal(mtimeNs(link), EXACT)
})

t.test('sets a directory mtime', { skip }, async (t) => {
  const dir = testdir(t, { sub: {} })
  setMtimeNs(join(dir, 'sub'), EXACT, { noFollow: true })
  t.equal(mtimeNs(join(dir, 'sub')), EXACT)
})

t.test('sets an mtime through a file descriptor', { skip }, async (t) => {
  const p = join(testdir(t, { f: 'x' }), 'f')
  const fd = fs.openSync(p, 'r+')
  t.teardown(() => fs.closeSync(fd))
  setMtimeNsFd(fd, EXACT)
  t.equal(mtimeNs(p), EXACT)
  setMtimeNsFd(fd, -1n)
  t.equal(mtimeNs(p), -1n)
})

t.test('reports errors with Node-style codes', async (t) => {
  const missing = join(testdir(t, {}), 'missing')
  t.throws(() => setMtimeNs(missing, EXACT, { noFollow: true }), { code: 'ENOENT', path: missing })
  t.throws(() => setMtimeNs(missing, EXACT, { noFollow: false }), { code: 'ENOENT' })
  t.throws(() => setMtimeNsFd(2 ** 30, EXACT), { code: 'EBADF' })
  if (nativeAvailable) {
    t.throws(() => setMtimeNs(missing, EXACT, { noFollow: true }), {
      code: 'ENOENT',
      errno: -2,
      syscall: 'utimensat',
      message: `ENOENT: no such file or directory, utimensat '${missing}'`,
    })
  }
})

t.test('syncFileSystem flushes the file system of a directory fd', { skip }, async (t) => {
  const fd = fs.openSync(testdir(t, { f: 'x' }), 'r')
  t.teardown(() => fs.closeSync(fd))
  await t.resolves(syncFileSystem(fd))
  await t.rejects(syncFileSystem(2 ** 30), { code: 'EBADF', syscall: 'syncfs' })
})

t.test('an unnamed file is invisible until linkUnnamedFile names it, and a taken name is EEXIST', { skip }, async (t) => {
  const dir = testdir(t, { taken: 'x' })
  const fd = openUnnamedFile(dir, 0o640)
  t.not(fd, null, 'this file system has O_TMPFILE')
  t.teardown(() => fs.closeSync(fd!))
  fs.writeSync(fd!, 'unnamed bytes', 0)
  t.strictSame(fs.readdirSync(dir), ['taken'], 'no name in the folder')
  t.equal(fs.fstatSync(fd!).nlink, 0, 'no link at all')
  t.throws(() => linkUnnamedFile(fd!, join(dir, 'taken')), { code: 'EEXIST', syscall: 'link' })
  linkUnnamedFile(fd!, join(dir, 'named'))
  t.equal(fs.readFileSync(join(dir, 'named'), 'utf8'), 'unnamed bytes')
  t.equal(fs.statSync(join(dir, 'named')).mode & 0o777, 0o640)
  t.equal(fs.fstatSync(fd!).ino, fs.statSync(join(dir, 'named')).ino, 'the open file got the name')
  const identity = new BigInt64Array(2)
  linkUnnamedFile(fd!, join(dir, 'second'), identity)
  const st = fs.statSync(join(dir, 'second'), { bigint: true })
  t.strictSame([BigInt.asUintN(64, identity[0]!), identity[1]], [st.ino, st.ctimeNs], 'its identity after the link, if asked')
  t.throws(() => openUnnamedFile(join(dir, 'missing'), 0o600), { code: 'ENOENT' })
  t.throws(() => linkUnnamedFile(2 ** 30, join(dir, 'bad')), { code: 'EBADF' })
})

t.test('createUnnamedFiles makes written unnamed files with their mode and mtime, in one job', { skip }, async (t) => {
  const dir = testdir(t, {})
  const files = [
    { data: Buffer.from('first file'), mode: 0o640, mtimeNs: EXACT },
    { data: new Uint8Array(0), mode: 0o600, mtimeNs: -123456789123456789n },
    { data: Buffer.alloc(20_000, 7), mode: 0o755, mtimeNs: 4102444800123456789n },
  ]
  const results = await createUnnamedFiles(dir, files)
  t.ok(results, 'this file system has O_TMPFILE')
  t.equal(results!.length, 3)
  t.strictSame(fs.readdirSync(dir), [], 'nothing has a name yet')
  for (const [i, fd] of results!.entries()) {
    if (typeof fd !== 'number') throw fd
    t.teardown(() => fs.closeSync(fd))
    linkUnnamedFile(fd, join(dir, `f${i}`))
    const st = fs.lstatSync(join(dir, `f${i}`), { bigint: true })
    t.strictSame(fs.readFileSync(join(dir, `f${i}`)), Buffer.from(files[i]!.data), `file ${i}: bytes`)
    t.equal(Number(st.mode & 0o7777n), files[i]!.mode, `file ${i}: mode, whatever the umask`)
    t.equal(st.mtimeNs, files[i]!.mtimeNs, `file ${i}: mtime to the nanosecond`)
  }
  const failed = await createUnnamedFiles(join(dir, 'missing'), [files[0]!])
  t.match(failed, [{ code: 'ENOENT', syscall: 'open', path: join(dir, 'missing') }], 'an error per file, as a value')
  t.strictSame(await createUnnamedFiles(dir, []), [], 'no files, no job')
})

t.test('closeFiles closes descriptors together on the thread pool', { skip }, async (t) => {
  const dir = testdir(t, { a: 'a', b: 'b' })
  const fds = ['a', 'b', 'a'].map((n) => fs.openSync(join(dir, n), 'r'))
  await closeFiles(fds)
  const target = (fd: number): string | null => {
    try {
      return fs.readlinkSync(`/proc/self/fd/${fd}`)
    } catch {
      return null // closed
    }
  }
  for (const fd of fds) t.notOk(target(fd)?.startsWith(dir), `fd ${fd} no longer holds a file of the test`)
  await closeFiles([])
})

t.test('readSmallFiles reads files whole with their identity, and says why it could not', { skip }, async (t) => {
  const dir = testdir(t, { a: 'alpha', empty: '', big: 'x'.repeat(100), sub: {}, link: t.fixture('symlink', 'a') })
  const paths = ['a', 'empty', 'big', 'missing', 'sub', 'link', 'a'].map((n) => join(dir, n))
  const read = await readSmallFiles(paths, [5, 0, 99, 10, 10, 10, 4])
  t.ok(read)
  const [a, empty, big, missing, sub, link, grown] = read!
  const st = fs.statSync(join(dir, 'a'), { bigint: true })
  t.match(a, { size: 5, ino: st.ino, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs })
  t.equal((a as { bytes: Buffer }).bytes.toString(), 'alpha')
  t.equal((empty as { bytes: Buffer }).bytes.length, 0, 'an empty file')
  t.equal(big, -os.constants.errno.EFBIG, 'bigger than it may be')
  t.equal(missing, -os.constants.errno.ENOENT)
  t.equal(sub, -os.constants.errno.EISDIR, 'a directory is not read')
  t.equal(link, -os.constants.errno.ELOOP, 'a symlink is not followed')
  t.equal(grown, -os.constants.errno.EFBIG, 'a file that grew past its room')
  t.strictSame(await readSmallFiles([], []), [])
})

t.test('copyFileRange copies a range between files inside the kernel', async (t) => {
  const dir = testdir(t)
  const data = Buffer.from(Array.from({ length: 3 << 20 }, (_, i) => (i * 31) & 0xff))
  fs.writeFileSync(join(dir, 'src'), data)
  const src = fs.openSync(join(dir, 'src'), 'r')
  const dst = fs.openSync(join(dir, 'dst'), 'w+')
  t.teardown(() => {
    fs.closeSync(src)
    fs.closeSync(dst)
  })
  t.equal(await copyFileRange(src, 1000, dst, 7, 2 << 20), 2 << 20)
  const out = fs.readFileSync(join(dir, 'dst'))
  t.equal(out.length, 7 + (2 << 20))
  t.ok(out.subarray(7).equals(data.subarray(1000, 1000 + (2 << 20))), 'the bytes of the range, at the offset asked')
  t.equal(await copyFileRange(src, data.length - 10, dst, 0, 100), 10, 'a short count where the source ends')
  await t.rejects(copyFileRange(999_999, 0, dst, 0, 1), { code: 'EBADF' })
})

t.test('copyThrough writes a range with O_DIRECT, reading the source from the cache or the disk', { skip }, async (t) => {
  const dir = testdir(t)
  const data = Buffer.from(Array.from({ length: (9 << 20) + 777 }, (_, i) => (i * 131 + (i >> 12)) & 0xff))
  fs.writeFileSync(join(dir, 'src'), data)
  const cached = fs.openSync(join(dir, 'src'), 'r')
  // The source's own O_DIRECT makes the cached read refuse (RWF_NOWAIT at an unaligned offset), so
  // the copy reads it the way it reads a source that is not in the page cache.
  const uncached = fs.openSync(join(dir, 'src'), fs.constants.O_RDONLY | fs.constants.O_DIRECT)
  const dst = fs.openSync(join(dir, 'dst'), 'w+')
  t.teardown(() => [cached, uncached, dst].forEach((fd) => fs.closeSync(fd)))
  const length = 8 << 20 // several of the addon's 1 MiB blocks
  t.equal(await copyThrough(cached, 1000, dst, DIRECT_IO_ALIGN, length), length)
  t.equal(await copyThrough(uncached, 3001, dst, DIRECT_IO_ALIGN + length, length), length)
  const out = fs.readFileSync(join(dir, 'dst'))
  t.equal(out.length, DIRECT_IO_ALIGN + 2 * length)
  t.ok(out.subarray(0, DIRECT_IO_ALIGN).equals(Buffer.alloc(DIRECT_IO_ALIGN)), 'nothing before the offset asked')
  t.ok(out.subarray(DIRECT_IO_ALIGN, DIRECT_IO_ALIGN + length).equals(data.subarray(1000, 1000 + length)), 'a cached source')
  t.ok(out.subarray(DIRECT_IO_ALIGN + length).equals(data.subarray(3001, 3001 + length)), 'a source read with O_DIRECT')
  // an aligned source: cloned where the file system shares blocks (XFS, Btrfs), written elsewhere
  t.equal(await copyThrough(cached, 2 * DIRECT_IO_ALIGN, dst, 0, length), length)
  t.ok(fs.readFileSync(join(dir, 'dst')).subarray(0, length).equals(data.subarray(2 * DIRECT_IO_ALIGN, 2 * DIRECT_IO_ALIGN + length)), 'an aligned source')
  for (const fd of [cached, uncached]) {
    t.equal(await copyThrough(fd, data.length - 5000, dst, 0, length), DIRECT_IO_ALIGN, 'where the source ends: the whole blocks it had')
  }
  await t.rejects(copyThrough(cached, 0, dst, 100, DIRECT_IO_ALIGN), RangeError)
  await t.rejects(copyThrough(cached, 0, dst, 0, 100), RangeError)
  await t.rejects(copyThrough(999_999, 0, dst, 0, DIRECT_IO_ALIGN), { code: 'EBADF' })
})

t.test('writeThroughAt writes an aligned buffer with O_DIRECT, past the page cache', { skip }, async (t) => {
  const dir = testdir(t)
  const length = 3 << 20
  const buf = alignedBuffer(length + 100)!
  t.equal(buf.length, length + 100)
  for (let i = 0; i < buf.length; i++) buf[i] = (i * 7 + (i >> 13)) & 0xff
  const dst = fs.openSync(join(dir, 'dst'), 'w+')
  t.teardown(() => fs.closeSync(dst))
  t.equal(await writeThroughAt(dst, buf, length, DIRECT_IO_ALIGN), true)
  let cached: number | null = null
  try {
    cached = Number(execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', join(dir, 'dst')], { encoding: 'utf8' }).trim())
  } catch {
    // no fincore(1) here: the bytes are still checked
  }
  if (cached !== null) t.equal(cached, 0, 'nothing of it in the page cache')
  const out = fs.readFileSync(join(dir, 'dst'))
  t.equal(out.length, DIRECT_IO_ALIGN + length)
  t.ok(out.subarray(0, DIRECT_IO_ALIGN).equals(Buffer.alloc(DIRECT_IO_ALIGN)), 'nothing before the offset asked')
  t.ok(out.subarray(DIRECT_IO_ALIGN).equals(buf.subarray(0, length)), 'the bytes asked, at the offset asked')
  await t.rejects(writeThroughAt(dst, buf, length, 100), RangeError)
  await t.rejects(writeThroughAt(dst, buf, 100, 0), RangeError)
  await t.rejects(writeThroughAt(999_999, buf, DIRECT_IO_ALIGN, 0), { code: 'EBADF' })
  t.equal(await writeThroughAt(dst, buf, DIRECT_IO_ALIGN, 0), true, 'still available after a bad descriptor')
})

t.test('without the addon, falls back to fs.utimes within 1 µs', async (t) => {
  const fallback = await t.mockImport<NativeModule>('../src/fs/native.js', {
    'node:module': {
      createRequire: () => () => {
        throw Object.assign(new Error('no addon'), { code: 'MODULE_NOT_FOUND' })
      },
    },
  })
  t.equal(fallback.nativeAvailable, false)
  t.equal(fallback.nativeLoadError?.message, 'no addon')

  const dir = testdir(t, { f: 'x', sub: {}, target: 'x', link: t.fixture('symlink', 'target') })
  const within1us = (p: string, want: bigint, what: string) =>
    t.ok(abs(mtimeNs(p) - want) <= 1000n, `${what}: ${mtimeNs(p)} ~ ${want}`)

  for (const ns of [EXACT, 1723456789000000000n, 1723456789999999999n, -1n, -123456789123456789n]) {
    const f = join(dir, 'f')
    const atime = atimeNs(f)
    fallback.setMtimeNs(f, ns, { noFollow: false })
    within1us(f, ns, `file ${ns}`)
    t.ok(abs(atimeNs(f) - atime) <= 1000n, 'atime kept to the microsecond')
  }

  fallback.setMtimeNs(join(dir, 'target'), OLD_NS, { noFollow: false })
  fallback.setMtimeNs(join(dir, 'link'), EXACT, { noFollow: true })
  within1us(join(dir, 'link'), EXACT, 'symlink')
  t.equal(mtimeNs(join(dir, 'target')), OLD_NS, 'symlink target untouched')

  fallback.setMtimeNs(join(dir, 'sub'), EXACT, { noFollow: true })
  within1us(join(dir, 'sub'), EXACT, 'directory')

  const fd = fs.openSync(join(dir, 'f'), 'r+')
  t.teardown(() => fs.closeSync(fd))
  fallback.setMtimeNsFd(fd, -1_500_000_001n)
  within1us(join(dir, 'f'), -1_500_000_001n, 'fd')

  t.throws(() => fallback.setMtimeNs(join(dir, 'missing'), EXACT, { noFollow: true }), {
    code: 'ENOENT',
  })
  await t.rejects(fallback.syncFileSystem(fd), { code: 'ENOSYS', syscall: 'syncfs' })

  // copyFileRange without the addon reads and writes, with the same result
  fs.writeFileSync(join(dir, 'data'), Buffer.alloc(3 << 20, 9))
  const src = fs.openSync(join(dir, 'data'), 'r')
  const dst = fs.openSync(join(dir, 'copy'), 'w+')
  t.teardown(() => {
    fs.closeSync(src)
    fs.closeSync(dst)
  })
  t.equal(await fallback.copyFileRange(src, 5, dst, 3, (2 << 20) + 1), (2 << 20) + 1)
  t.ok(fs.readFileSync(join(dir, 'copy')).subarray(3).equals(Buffer.alloc((2 << 20) + 1, 9)))
  t.equal(await fallback.copyFileRange(src, (3 << 20) - 4, dst, 0, 100), 4)
  t.equal(await fallback.copyThrough(src, 0, dst, 0, 1 << 20), null, 'no direct copies: the caller copies another way')
  t.equal(fallback.directWritesAvailable(), false)
  t.equal(fallback.alignedBuffer(DIRECT_IO_ALIGN), null, 'no aligned memory without the addon')
  t.equal(await fallback.writeThroughAt(dst, Buffer.alloc(DIRECT_IO_ALIGN), DIRECT_IO_ALIGN, 0), false, 'no direct writes: the caller writes another way')
})

t.test('trimMemory gives the memory malloc holds free back to the system', { skip: process.platform === 'linux' && nativeAvailable ? false : 'Linux with the addon only' }, async (t) => {
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  const rssAnonKiB = (): number => Number(/RssAnon:\s+(\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))![1])
  // 256 MiB in 16 KiB buffers from malloc, one in eight kept: the freed ones are holes in the
  // middle of malloc's heap, which free() does not return by itself
  let buffers: Buffer[] | null = Array.from({ length: 16_384 }, () => Buffer.allocUnsafeSlow(16 << 10).fill(1))
  const kept = buffers.filter((_, i) => i % 8 === 0)
  buffers = null
  gc()
  gc()
  const before = rssAnonKiB()
  t.equal(trimMemory(), true, 'some memory was released')
  const after = rssAnonKiB()
  t.ok(before - after > 100 << 10, `RssAnon ${before >> 10} MiB before, ${after >> 10} MiB after (224 MiB were free)`)
  t.equal(kept.length, 2_048, 'the kept buffers are still there')
  t.ok(kept.every((b) => b[0] === 1 && b[(16 << 10) - 1] === 1), 'and intact')
})
