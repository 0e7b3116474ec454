// One upload assembled under `.sfm/tmp/` (src/server/upload.ts), with a real Mirror on a temporary folder:
// CHUNK data verified and written, REFS resolved through the index and verified as read, the COMMIT's
// size and content id checked, and the budget of queued copies and writes always given back (sfm's
// own CHUNKs are written at once, except past the first MiB of an upload flushed before it is
// confirmed, which goes to the disk with O_DIRECT on the thread pool).
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { closeSync, constants as fsc, fstatSync, lstatSync, openSync, readFileSync, readSync, readdirSync, rmSync, statSync, writeFileSync, truncateSync } from 'node:fs'
import { join } from 'node:path'
import { digestBuffer, type Digest } from '../src/digest.js'
import { nativeAvailable, setMtimeNs } from '../src/fs/native.js'
import { EMPTY_CONTENT_ID, hash128 } from '../src/hash.js'
import { silentLogger } from '../src/log.js'
import type { Commit, Ref } from '../src/protocol/messages.js'
import { contentIdOf } from '../src/tree.js'
import { Mirror, type MirrorOptions, type StagedFile } from '../src/server/mirror.js'
import { Upload, type WriteBudget } from '../src/server/upload.js'
import { testdir } from './helpers/testdir.js'

type Test = Pick<typeof t, 'teardown' | 'ok' | 'notOk' | 'equal' | 'rejects'>

const T0 = 1_600_000_000_123_456_789n
const T1 = 1_650_000_000_987_654_321n

/** Deterministic bytes: xorshift32 from a seed. */
function bytes(n: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(n)
  let x = Math.imul(seed + 1, 0x9e3779b1) | 1
  for (let i = 0; i < n; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    out[i] = x & 0xff
  }
  return out
}

/** Counts what an upload takes from and gives back to the budget. */
class CountingBudget implements WriteBudget {
  taken = 0
  given = 0
  outstanding = 0
  /** Of `taken`, what was taken for queued copies (the session bounds those apart from data). */
  copiesTaken = 0
  wentNegative = false
  take(n: number, copy = false): void {
    this.taken += n
    this.outstanding += n
    if (copy) this.copiesTaken += n
  }
  give(n: number): void {
    this.given += n
    this.outstanding -= n
    if (this.outstanding < 0) this.wentNegative = true
  }
}

function checkBudget(t: Test, b: CountingBudget): void {
  t.equal(b.outstanding, 0, `the write budget is back at zero (taken ${b.taken}, given ${b.given})`)
  t.equal(b.taken, b.given, 'every byte taken was given back')
  t.notOk(b.wentNegative, 'never more given than taken')
}

async function openMirror(t: Test, opts: Partial<MirrorOptions> & { root: string }): Promise<Mirror> {
  const m = await Mirror.open({ log: silentLogger, ...opts })
  let closed = false
  const close = m.close.bind(m)
  m.close = async () => {
    if (closed) return
    closed = true
    await close()
  }
  t.teardown(() => m.close())
  return m
}

let nextId = 1

function commitMsg(path: string, size: number, contentId: Buffer, mode = 0o644, mtimeNs = T0): Commit {
  return { type: 'commit', uploadId: 0, path, mode, mtimeNs, size, contentId }
}

/** The chunks of a digest, as (id, data) pairs. */
function chunksOf(data: Buffer, d: Digest): Array<{ hash: Buffer; data: Buffer }> {
  const out: Array<{ hash: Buffer; data: Buffer }> = []
  for (let i = 0, off = 0; i < d.lengths.length; off += d.lengths[i++]!) {
    out.push({ hash: Buffer.from(d.ids.subarray(i * 16, i * 16 + 16)), data: data.subarray(off, off + d.lengths[i]!) })
  }
  return out
}

function sendChunks(u: Upload, chunks: Array<{ hash: Buffer; data: Buffer }>): void {
  for (const c of chunks) u.addChunk({ type: 'chunk', uploadId: u.id, hash: c.hash, data: c.data })
}

/** Uploads `data` as CHUNKs and commits it at `path`: the file every REF test draws on. */
async function put(m: Mirror, budget: WriteBudget, path: string, data: Buffer, mtimeNs = T0): Promise<Digest> {
  const d = digestBuffer(data)
  const u = new Upload(nextId++, m, budget)
  sendChunks(u, chunksOf(data, d))
  const staged = await u.stage(commitMsg(path, d.size, d.contentId, 0o644, mtimeNs), false)
  await m.commitFile(path, staged)
  return d
}

/** The bytes of a staged upload, read through its open file (an unnamed one has no path). */
function stagedBytes(s: StagedFile): Buffer {
  const size = fstatSync(s.fd!).size
  const buf = Buffer.alloc(size)
  let n = 0
  while (n < size) {
    const got = readSync(s.fd!, buf, n, size - n, n)
    if (got === 0) break
    n += got
  }
  return buf.subarray(0, n)
}

async function stageCode(p: Promise<unknown>): Promise<string> {
  return p.then(
    () => 'staged',
    (e: { code?: string }) => e.code ?? String(e),
  )
}

t.test('CHUNKs and stage give a temporary file with the right content, mode, mtime and manifest', async (t) => {
  const root = testdir(t)
  const m = await openMirror(t, { root })
  const budget = new CountingBudget()
  const data = bytes(700_000, 1)
  const d = digestBuffer(data)
  t.ok(d.lengths.length > 5, `${d.lengths.length} chunks`)
  const u = new Upload(nextId++, m, budget)
  sendChunks(u, chunksOf(data, d))
  t.ok(budget.taken <= data.length, 'at most the CHUNK data is held against the budget while it is written')
  const s = await u.stage(commitMsg('f', data.length, d.contentId, 0o640, T1), true)
  t.notOk(u.failed)
  t.ok(s.tmpPath?.startsWith(m.tmpDir + '/'), 'flushed on its own: named under .sfm/tmp')
  t.strictSame(readFileSync(s.tmpPath!), data)
  const st = lstatSync(s.tmpPath!, { bigint: true })
  t.equal(Number(st.mode & 0o777n), 0o640)
  t.equal(st.mtimeNs, T1)
  t.equal(fstatSync(s.fd!, { bigint: true }).ino, st.ino, 'the named file is the open one')
  t.equal(s.size, data.length)
  t.strictSame(s.contentId, d.contentId)
  t.strictSame(s.manifest.ids, d.ids)
  t.strictSame([...s.manifest.lengths], [...d.lengths])
  t.equal(s.mode, 0o640)
  t.equal(s.mtimeNs, T1)
  checkBudget(t, budget)

  await m.commitFile('f', s)
  t.strictSame(readFileSync(join(root, 'f')), data)
  t.strictSame(readdirSync(m.tmpDir), [])
})

t.test('CHUNKs bigger than sfm cuts (another client may send up to 1 MiB) are written on the thread pool', async (t) => {
  const root = testdir(t)
  const m = await openMirror(t, { root })
  const budget = new CountingBudget()
  const data = bytes(3 * 600_000 + 5, 4)
  const chunks = [0, 600_000, 1_200_000].map((at, i) => data.subarray(at, i === 2 ? data.length : at + 600_000))
  const ids = chunks.map((c) => hash128(c))
  const u = new Upload(nextId++, m, budget)
  sendChunks(u, chunks.map((c, i) => ({ hash: ids[i]!, data: c })))
  t.equal(budget.taken, data.length, 'each held against the budget while it is written')
  t.equal(budget.copiesTaken, 0, 'as data, not as a queued copy')
  const contentId = contentIdOf(Buffer.concat(ids), chunks.map((c) => c.length))
  const s = await u.stage(commitMsg('big', data.length, contentId), true)
  t.notOk(u.failed)
  t.strictSame(readFileSync(s.tmpPath!), data)
  checkBudget(t, budget)
  await m.commitFile('big', s)
  t.strictSame(readFileSync(join(root, 'big')), data)
})

/** Bytes of `path` in the page cache, by fincore(1) (util-linux); null where it cannot tell. */
function cachedBytes(path: string): number | null {
  try {
    return Number(execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', path], { encoding: 'utf8' }).trim())
  } catch {
    return null
  }
}

/** Whether files in `dir` can be opened with O_DIRECT (not on every file system). */
function directIoWorks(dir: string): boolean {
  const probe = join(dir, 'direct-probe')
  try {
    closeSync(openSync(probe, fsc.O_CREAT | fsc.O_WRONLY | fsc.O_DIRECT, 0o600))
    return true
  } catch {
    return false
  } finally {
    rmSync(probe, { force: true })
  }
}

t.test('a big REF range of an upload flushed before it is confirmed is written through to the disk, not the page cache', { skip: nativeAvailable ? false : 'addon not built' }, async (t) => {
  const root = testdir(t)
  const m = await openMirror(t, { root })
  const budget = new CountingBudget()
  const dataA = bytes((4 << 20) + 4321, 15)
  const a = await put(m, budget, 'a', dataA)
  const extra = bytes(1000, 16) // puts the copied range at an offset that is not a multiple of 4096
  const u = new Upload(nextId++, m, budget, true)
  u.addChunk({ type: 'chunk', uploadId: u.id, hash: hash128(extra), data: extra })
  u.addRefs([{ hash: a.contentId, length: a.size }])
  t.equal(budget.copiesTaken, a.size, 'the REF is held against the budget as a queued copy')
  const want = Buffer.concat([extra, dataA])
  const contentId = contentIdOf(Buffer.concat([hash128(extra), a.ids]), [extra.length, ...a.lengths])
  const s = await u.stage(commitMsg('b', want.length, contentId), true)
  t.notOk(u.failed)
  const cached = cachedBytes(s.tmpPath!)
  if (cached !== null && directIoWorks(root)) {
    t.ok(cached <= 4 * 4096, `only the edges of the copied range are in the page cache: ${cached} of ${want.length} bytes`)
  }
  t.strictSame(stagedBytes(s), want)
  await m.commitFile('b', s)
  t.strictSame(readFileSync(join(root, 'b')), want)
  checkBudget(t, budget)

  // not flushed before it is confirmed (sfmd --no-fsync): copied through the page cache
  const u2 = new Upload(nextId++, m, budget, false)
  u2.addRefs([{ hash: a.contentId, length: a.size }])
  const s2 = await u2.stage(commitMsg('c', a.size, a.contentId), false)
  const cached2 = cachedBytes(s2.tmpPath ?? `/proc/${process.pid}/fd/${s2.fd}`) // an unnamed file: through its descriptor
  if (cached2 !== null) t.ok(cached2 >= a.size, `all of it in the page cache: ${cached2} bytes`)
  t.strictSame(stagedBytes(s2), dataA)
  await u2.discard()
  checkBudget(t, budget)
})

t.test('CHUNK data past the first MiB of an upload flushed before it is confirmed is written to the disk, not the page cache', { skip: nativeAvailable ? false : 'addon not built' }, async (t) => {
  const root = testdir(t)
  const m = await openMirror(t, { root })
  const budget = new CountingBudget()
  const base = await put(m, budget, 'base', bytes(300_000, 20))
  // CHUNKs of odd sizes around two REFS: one to content in the mirror, one to a chunk sent earlier
  // in this upload, which must be in the file by the time it is copied
  const data = bytes((6 << 20) + 5555, 21)
  const d = digestBuffer(data)
  const chunks = chunksOf(data, d)
  const half = chunks.length >> 1
  const u = new Upload(nextId++, m, budget, true)
  sendChunks(u, chunks.slice(0, half))
  u.addRefs([{ hash: base.contentId, length: base.size }, { hash: chunks[half - 1]!.hash, length: chunks[half - 1]!.data.length }])
  sendChunks(u, chunks.slice(half))
  const want = Buffer.concat([data.subarray(0, d.size - chunks.slice(half).reduce((n, c) => n + c.data.length, 0)), bytes(300_000, 20), chunks[half - 1]!.data, ...chunks.slice(half).map((c) => c.data)])
  const ids = [...chunks.slice(0, half).map((c) => c.hash), base.ids, chunks[half - 1]!.hash, ...chunks.slice(half).map((c) => c.hash)]
  const lengths = [...chunks.slice(0, half).map((c) => c.data.length), ...base.lengths, chunks[half - 1]!.data.length, ...chunks.slice(half).map((c) => c.data.length)]
  const s = await u.stage(commitMsg('f', want.length, contentIdOf(Buffer.concat(ids), lengths)), true)
  t.notOk(u.failed)
  const cached = cachedBytes(s.tmpPath!) // before anything reads the file into the cache
  if (cached !== null && directIoWorks(root)) {
    // the first MiB, the copied ranges and the unaligned edges of three runs of CHUNK data
    t.ok(cached <= (1 << 20) + 300_000 + chunks[half - 1]!.data.length + 16 * 4096, `mostly not in the page cache: ${cached} of ${want.length} bytes`)
  }
  t.strictSame(stagedBytes(s), want, 'every byte where it belongs')
  checkBudget(t, budget)
  await m.commitFile('f', s)
  t.strictSame(readFileSync(join(root, 'f')), want)

  // not flushed before it is confirmed (sfmd --no-fsync): through the page cache
  const u2 = new Upload(nextId++, m, budget, false)
  sendChunks(u2, chunks)
  const s2 = await u2.stage(commitMsg('g', d.size, d.contentId), false)
  const cached2 = cachedBytes(s2.tmpPath ?? `/proc/${process.pid}/fd/${s2.fd}`)
  if (cached2 !== null) t.ok(cached2 >= d.size, `all of it in the page cache: ${cached2} bytes`)
  t.strictSame(stagedBytes(s2), data)
  await u2.discard()

  // an upload abandoned halfway leaves the budget as it found it
  const u3 = new Upload(nextId++, m, budget, true)
  sendChunks(u3, chunks.slice(0, half))
  await u3.discard()
  checkBudget(t, budget)
})

t.test('staged for a file-system-wide flush, an upload is an unnamed file until it is linked into place', { skip: nativeAvailable ? false : 'addon not built' }, async (t) => {
  const root = testdir(t)
  const m = await openMirror(t, { root })
  const budget = new CountingBudget()
  const data = bytes(200_000, 7)
  const d = digestBuffer(data)
  const u = new Upload(nextId++, m, budget)
  sendChunks(u, chunksOf(data, d))
  const s = await u.stage(commitMsg('dir/f', data.length, d.contentId, 0o640, T1), false)
  t.equal(s.tmpPath, null, 'no name of its own')
  t.strictSame(readdirSync(m.tmpDir), [], 'nothing under .sfm/tmp')
  t.strictSame(readdirSync(root).sort(), ['.sfm'], 'nothing in the mirror yet')
  await m.commitFile('dir/f', s)
  u.release()
  const abs = join(root, 'dir/f')
  t.strictSame(readFileSync(abs), data)
  const st = lstatSync(abs, { bigint: true })
  t.equal(Number(st.mode & 0o777n), 0o640)
  t.equal(st.mtimeNs, T1)
  t.equal(st.nlink, 1n, 'one name')
  const node = m.catalog.get('dir/f')
  t.ok(node?.kind === 'file' && node.ino === st.ino && node.ctimeNs === st.ctimeNs, 'the catalog has its identity after the link')
  t.strictSame(readdirSync(m.tmpDir), [])

  // over an existing file: replaced in one rename, the old version kept in the trash
  const next = bytes(50_000, 8)
  const d2 = digestBuffer(next)
  const u2 = new Upload(nextId++, m, budget)
  sendChunks(u2, chunksOf(next, d2))
  const s2 = await u2.stage(commitMsg('dir/f', next.length, d2.contentId, 0o600, T0), false)
  await m.commitFile('dir/f', s2)
  u2.release()
  t.strictSame(readFileSync(abs), next)
  t.equal(lstatSync(abs).mode & 0o777, 0o600)
  t.strictSame(readdirSync(m.tmpDir), [], 'the link made for the rename is gone with it')
  t.equal(readdirSync(m.trashDir).length, 1, 'the old version is in the trash')

  // over an entry the catalog does not know (made behind the server's back): replaced too
  writeFileSync(join(root, 'dir/g'), 'not from the client')
  const u3 = new Upload(nextId++, m, budget)
  sendChunks(u3, chunksOf(next, d2))
  const s3 = await u3.stage(commitMsg('dir/g', next.length, d2.contentId), false)
  await m.commitFile('dir/g', s3)
  u3.release()
  t.strictSame(readFileSync(join(root, 'dir/g')), next)
  t.strictSame(readdirSync(m.tmpDir), [])
  checkBudget(t, budget)
})

t.test('small uploads are held in memory, then made together on the thread pool with their mode and mtime', { skip: nativeAvailable ? false : 'addon not built' }, async (t) => {
  const root = testdir(t)
  const m = await openMirror(t, { root })
  const budget = new CountingBudget()
  const openFds = () => readdirSync('/proc/self/fd').length
  const small = bytes(3000, 11)
  const two = [bytes(2000, 12), bytes(1000, 13)]
  const fdsBefore = openFds()
  const held = new Upload(nextId++, m, budget)
  held.addChunk({ type: 'chunk', uploadId: held.id, hash: hash128(small), data: small })
  const empty = new Upload(nextId++, m, budget)
  t.equal(openFds(), fdsBefore, 'a small CHUNK opens no file')
  const twoChunks = new Upload(nextId++, m, budget)
  for (const c of two) twoChunks.addChunk({ type: 'chunk', uploadId: twoChunks.id, hash: hash128(c), data: c })
  t.equal(openFds(), fdsBefore + 1, 'a second CHUNK opens the file, with the first written to it')
  const bad = new Upload(nextId++, m, budget)
  bad.addChunk({ type: 'chunk', uploadId: bad.id, hash: hash128(two[0]!), data: small })

  const commits = [
    { upload: held, commit: commitMsg('held', small.length, hash128(small), 0o600, T1) },
    { upload: empty, commit: commitMsg('empty', 0, EMPTY_CONTENT_ID, 0o755, T0) },
    { upload: twoChunks, commit: commitMsg('two', 3000, contentIdOf(Buffer.concat(two.map((c) => hash128(c))), [2000, 1000])) },
    { upload: bad, commit: commitMsg('bad', small.length, hash128(small)) },
  ]
  await Upload.createHeldFiles(m, commits)
  t.equal(openFds(), fdsBefore + 3, 'made: the held file and the empty one, not the failed upload')
  for (const [i, want] of [small, Buffer.alloc(0), Buffer.concat(two)].entries()) {
    const { upload, commit } = commits[i]!
    const s = await upload.stage(commit, false)
    t.strictSame(stagedBytes(s), want, `${commit.path}: bytes`)
    await m.commitFile(commit.path, s)
    upload.release()
    const st = lstatSync(join(root, commit.path), { bigint: true })
    t.equal(Number(st.mode & 0o777n), commit.mode, `${commit.path}: mode`)
    t.equal(st.mtimeNs, commit.mtimeNs, `${commit.path}: mtime`)
  }
  t.equal(await stageCode(bad.stage(commits[3]!.commit, false)), 'SFM_ERR_HASH_MISMATCH')
  await bad.discard()
  t.equal(openFds(), fdsBefore, 'every file closed')
  checkBudget(t, budget)
})

t.test('a discarded unnamed upload leaves nothing behind', { skip: nativeAvailable ? false : 'addon not built' }, async (t) => {
  const root = testdir(t)
  const m = await openMirror(t, { root })
  const budget = new CountingBudget()
  const data = bytes(100_000, 9)
  const d = digestBuffer(data)
  const u = new Upload(nextId++, m, budget)
  sendChunks(u, chunksOf(data, d))
  const s = await u.stage(commitMsg('f', data.length, d.contentId), false)
  const fd = s.fd!
  await u.discard()
  t.throws(() => fstatSync(fd), { code: 'EBADF' }, 'its file is closed')
  t.strictSame(readdirSync(m.tmpDir), [])
  t.strictSame(readdirSync(root), ['.sfm'])
})

t.test('an upload with no CHUNK or REFS is the empty file', async (t) => {
  const m = await openMirror(t, { root: testdir(t) })
  const budget = new CountingBudget()
  const u = new Upload(nextId++, m, budget)
  const s = await u.stage(commitMsg('e', 0, EMPTY_CONTENT_ID), false)
  t.equal(fstatSync(s.fd!).size, 0)
  t.strictSame(s.contentId, hash128(Buffer.alloc(0)))
  t.equal(s.manifest.lengths.length, 0)
  checkBudget(t, budget)
})

t.test('a CHUNK whose hash does not match its data fails the upload: SFM_ERR_HASH_MISMATCH', async (t) => {
  const m = await openMirror(t, { root: testdir(t) })
  const budget = new CountingBudget()
  const data = bytes(300_000, 2)
  const d = digestBuffer(data)
  const chunks = chunksOf(data, d)
  const bad = Buffer.from(chunks[1]!.data)
  bad[7] ^= 1
  chunks[1] = { hash: chunks[1]!.hash, data: bad }
  const u = new Upload(nextId++, m, budget)
  sendChunks(u, chunks)
  t.ok(u.failed, 'failed at once')
  t.equal(await stageCode(u.stage(commitMsg('f', data.length, d.contentId), false)), 'SFM_ERR_HASH_MISMATCH')
  await u.discard()
  t.strictSame(readdirSync(m.tmpDir), [], 'nothing left in tmp')
  checkBudget(t, budget)
})

t.test('REFS to content the index has: copied and verified', async (t) => {
  const root = testdir(t)
  const m = await openMirror(t, { root })
  const budget = new CountingBudget()
  const dataA = bytes(600_000, 3)
  const a = await put(m, budget, 'a', dataA)
  t.ok(a.lengths.length > 3, `${a.lengths.length} chunks`)

  // the whole file by its content id
  const u1 = new Upload(nextId++, m, budget)
  u1.addRefs([{ hash: a.contentId, length: a.size }])
  const s1 = await u1.stage(commitMsg('copy', a.size, a.contentId), false)
  t.strictSame(stagedBytes(s1), dataA, 'by content id')
  t.strictSame(s1.manifest.ids, a.ids, "the copy's manifest is the source's chunks")
  await m.commitFile('copy', s1)

  // chunk by chunk, in reverse order: a different file, made only of REFS
  const refs: Ref[] = []
  for (let i = a.lengths.length - 1; i >= 0; i--) refs.push({ hash: Buffer.from(a.ids.subarray(i * 16, i * 16 + 16)), length: a.lengths[i]! })
  const reversed = Buffer.concat(chunksOf(dataA, a).reverse().map((c) => c.data))
  const revId = contentIdOf(Buffer.concat(refs.map((r) => r.hash)), refs.map((r) => r.length))
  const u2 = new Upload(nextId++, m, budget)
  u2.addRefs(refs)
  const s2 = await u2.stage(commitMsg('rev', reversed.length, revId), false)
  t.strictSame(stagedBytes(s2), reversed, 'by chunk ids')
  await u2.discard()

  // REFS and CHUNKs mixed: the old file, then new bytes
  const extra = Buffer.from('appended bytes')
  const mixedId = contentIdOf(Buffer.concat([a.ids, hash128(extra)]), [...a.lengths, extra.length])
  const u3 = new Upload(nextId++, m, budget)
  u3.addRefs([{ hash: a.contentId, length: a.size }])
  u3.addChunk({ type: 'chunk', uploadId: u3.id, hash: hash128(extra), data: extra })
  const s3 = await u3.stage(commitMsg('mixed', a.size + extra.length, mixedId), false)
  t.strictSame(stagedBytes(s3), Buffer.concat([dataA, extra]), 'REFS then CHUNK')
  await m.commitFile('mixed', s3)
  t.strictSame(readFileSync(join(root, 'mixed')), Buffer.concat([dataA, extra]))
  checkBudget(t, budget)
})

t.test('a REF can name content in the trash (deleted during the grace period)', async (t) => {
  const m = await openMirror(t, { root: testdir(t), trashTtlMs: 60_000 })
  const budget = new CountingBudget()
  const data = bytes(200_000, 4)
  const a = await put(m, budget, 'a', data)
  await m.delete('a')
  const u = new Upload(nextId++, m, budget)
  u.addRefs([{ hash: a.contentId, length: a.size }])
  const s = await u.stage(commitMsg('b', a.size, a.contentId), false)
  t.strictSame(stagedBytes(s), data)
  await u.discard()
  checkBudget(t, budget)
})

t.test('a REF whose first place leaves before its copy (trash expired, file removed behind the server) is copied from another place', async (t) => {
  const root = testdir(t)
  const m = await openMirror(t, { root, trashTtlMs: 60_000 })
  const budget = new CountingBudget()
  const data = bytes(600_000, 14)
  const a = await put(m, budget, 'a', data)
  await put(m, budget, 'b', data)
  await put(m, budget, 'c', data)
  await m.delete('a') // its place, in the trash, is the first the index gives
  t.equal(m.index.lookup(a.contentId).length, 3)

  // The trash empties between the REFS and the copy: in sfmd the copies wait their turn behind others.
  // One REF per chunk, in order: queued as one copy, then copied REF by REF from another place.
  const u1 = new Upload(nextId++, m, budget)
  u1.addRefs(chunksOf(data, a).map((c) => ({ hash: c.hash, length: c.data.length })))
  const expired = m.expireTrash(true)
  t.ok(a.lengths.length > 3, `${a.lengths.length} chunks`)
  const s1 = await u1.stage(commitMsg('d', a.size, a.contentId), false)
  t.strictSame(stagedBytes(s1), data, 'copied from a file still in the mirror')
  t.equal(await expired, 1)
  await u1.discard()

  // 'b' removed behind the server: its place is forgotten, and 'c' serves.
  rmSync(join(root, 'b'))
  const u2 = new Upload(nextId++, m, budget)
  u2.addRefs([{ hash: a.contentId, length: a.size }])
  const s2 = await u2.stage(commitMsg('e', a.size, a.contentId), false)
  t.strictSame(stagedBytes(s2), data, 'copied from c')
  await u2.discard()
  t.strictSame(m.index.lookup(a.contentId).map((l) => m.absPathOf(l.file)), [join(root, 'c')], 'only c is left in the index')

  // no place left at all: SFM_ERR_MISSING, as for content never seen
  rmSync(join(root, 'c'))
  const u3 = new Upload(nextId++, m, budget)
  u3.addRefs([{ hash: a.contentId, length: a.size }])
  t.equal(await stageCode(u3.stage(commitMsg('f', a.size, a.contentId), false)), 'SFM_ERR_MISSING')
  await u3.discard()
  checkBudget(t, budget)
})

t.test('an unknown REF fails the upload: SFM_ERR_MISSING', async (t) => {
  const m = await openMirror(t, { root: testdir(t) })
  const budget = new CountingBudget()
  const a = await put(m, budget, 'a', bytes(100_000, 5))

  const unknown = hash128(Buffer.from('nobody has this'))
  const u1 = new Upload(nextId++, m, budget)
  u1.addRefs([{ hash: unknown, length: 10 }])
  t.ok(u1.failed)
  t.equal(await stageCode(u1.stage(commitMsg('x', 10, unknown), false)), 'SFM_ERR_MISSING')
  await u1.discard()

  // a known id with a length that does not match it
  const u2 = new Upload(nextId++, m, budget)
  u2.addRefs([{ hash: a.contentId, length: a.size - 1 }])
  t.equal(await stageCode(u2.stage(commitMsg('x', a.size - 1, a.contentId), false)), 'SFM_ERR_MISSING')
  await u2.discard()

  // what comes after the missing ref is not used
  const u3 = new Upload(nextId++, m, budget)
  u3.addRefs([
    { hash: unknown, length: 10 },
    { hash: a.contentId, length: a.size },
  ])
  u3.addChunk({ type: 'chunk', uploadId: u3.id, hash: hash128(Buffer.from('z')), data: Buffer.from('z') })
  t.equal(await stageCode(u3.stage(commitMsg('x', 1, a.contentId), false)), 'SFM_ERR_MISSING')
  await u3.discard()
  t.strictSame(readdirSync(m.tmpDir), [])
  checkBudget(t, budget)
})

t.test('a REF to a chunk sent earlier in the same upload', async (t) => {
  const m = await openMirror(t, { root: testdir(t) })
  const budget = new CountingBudget()
  const c = bytes(5000, 6)
  const other = Buffer.from('between')
  const id = hash128(c)
  const u = new Upload(nextId++, m, budget)
  u.addChunk({ type: 'chunk', uploadId: u.id, hash: id, data: c })
  u.addChunk({ type: 'chunk', uploadId: u.id, hash: hash128(other), data: other })
  u.addRefs([
    { hash: id, length: c.length },
    { hash: id, length: c.length },
  ])
  const expected = Buffer.concat([c, other, c, c])
  const contentId = contentIdOf(Buffer.concat([id, hash128(other), id, id]), [c.length, other.length, c.length, c.length])
  const s = await u.stage(commitMsg('f', expected.length, contentId), false)
  t.strictSame(stagedBytes(s), expected)
  await u.discard()
  checkBudget(t, budget)
})

t.test('a COMMIT whose size or content id disagrees with the upload: SFM_ERR_CONTENT_MISMATCH', async (t) => {
  const m = await openMirror(t, { root: testdir(t) })
  const budget = new CountingBudget()
  const data = bytes(150_000, 7)
  const d = digestBuffer(data)
  for (const [what, size, contentId] of [
    ['size too large', data.length + 1, d.contentId],
    ['size too small', data.length - 1, d.contentId],
    ['other content id', data.length, hash128(Buffer.from('other'))],
  ] as const) {
    const u = new Upload(nextId++, m, budget)
    sendChunks(u, chunksOf(data, d))
    t.equal(await stageCode(u.stage(commitMsg('f', size, contentId), false)), 'SFM_ERR_CONTENT_MISMATCH', what)
    await u.discard()
  }
  // chunks in another order: same size, same chunk ids, different content id
  const u = new Upload(nextId++, m, budget)
  sendChunks(u, chunksOf(data, d).reverse())
  t.equal(await stageCode(u.stage(commitMsg('f', data.length, d.contentId), false)), 'SFM_ERR_CONTENT_MISMATCH', 'chunks reordered')
  await u.discard()
  t.strictSame(readdirSync(m.tmpDir), [])
  checkBudget(t, budget)
})

t.test('a mirror file changed behind the server (same size and mtime): a REF to it is SFM_ERR_MISSING and the index forgets it', async (t) => {
  const root = testdir(t)
  const m = await openMirror(t, { root })
  const budget = new CountingBudget()
  const original = bytes(400_000, 8)
  const a = await put(m, budget, 'a', original, T1)
  const tampered = bytes(400_000, 9)
  writeFileSync(join(root, 'a'), tampered) // same inode, same size
  setMtimeNs(join(root, 'a'), T1, { noFollow: true }) // same mtime
  t.equal(lstatSync(join(root, 'a'), { bigint: true }).mtimeNs, T1)
  t.ok(m.index.has(a.contentId), 'the index still believes the old content is there')

  const u = new Upload(nextId++, m, budget)
  u.addRefs([{ hash: a.contentId, length: a.size }])
  t.equal(await stageCode(u.stage(commitMsg('b', a.size, a.contentId), false)), 'SFM_ERR_MISSING')
  await u.discard()
  t.strictSame(m.index.lookup(a.contentId), [], 'the content id is forgotten')
  t.strictSame(m.index.lookup(a.ids.subarray(0, 16)), [], 'and every chunk of that file')
  t.strictSame(readFileSync(join(root, 'a')), tampered, 'the mirror file itself is left alone')

  // a fresh upload of the same content by CHUNKs still works
  const again = await put(m, budget, 'c', original)
  t.strictSame(again.contentId, a.contentId)
  t.strictSame(readFileSync(join(root, 'c')), original)
  checkBudget(t, budget)
})

t.test('a REF to one unchanged chunk of a file changed elsewhere is still served; the file is dropped once a bad chunk is read', async (t) => {
  const root = testdir(t)
  const m = await openMirror(t, { root })
  const budget = new CountingBudget()
  const original = bytes(600_000, 10)
  const a = await put(m, budget, 'a', original, T1)
  const n = a.lengths.length
  const lastOffset = a.offsets[n - 1]!
  const tampered = Buffer.from(original)
  tampered[lastOffset + 1] ^= 0xff // only the last chunk changes
  writeFileSync(join(root, 'a'), tampered)
  setMtimeNs(join(root, 'a'), T1, { noFollow: true })

  const first: Ref = { hash: Buffer.from(a.ids.subarray(0, 16)), length: a.lengths[0]! }
  const u1 = new Upload(nextId++, m, budget)
  u1.addRefs([first])
  const s1 = await u1.stage(commitMsg('x', first.length, first.hash), false)
  t.strictSame(stagedBytes(s1), original.subarray(0, first.length), 'the first chunk still verifies')
  await u1.discard()

  const last: Ref = { hash: Buffer.from(a.ids.subarray((n - 1) * 16)), length: a.lengths[n - 1]! }
  const u2 = new Upload(nextId++, m, budget)
  u2.addRefs([last])
  t.equal(await stageCode(u2.stage(commitMsg('y', last.length, last.hash), false)), 'SFM_ERR_MISSING')
  await u2.discard()
  t.notOk(m.index.has(first.hash), 'after a failed verification nothing of that file is offered')
  checkBudget(t, budget)
})

t.test('a mirror file cut short behind the server: a REF to it is SFM_ERR_MISSING', async (t) => {
  const root = testdir(t)
  const m = await openMirror(t, { root })
  const budget = new CountingBudget()
  const a = await put(m, budget, 'a', bytes(300_000, 11))
  truncateSync(join(root, 'a'), 1000)
  const u = new Upload(nextId++, m, budget)
  u.addRefs([{ hash: a.contentId, length: a.size }])
  t.equal(await stageCode(u.stage(commitMsg('b', a.size, a.contentId), false)), 'SFM_ERR_MISSING')
  await u.discard()
  t.notOk(m.index.has(a.contentId))
  checkBudget(t, budget)
})

t.test('a file changed behind a stopped server: after the restart, a REF to the old content is SFM_ERR_MISSING', async (t) => {
  const root = testdir(t)
  const budget = new CountingBudget()
  const m = await openMirror(t, { root })
  const a = await put(m, budget, 'a', bytes(300_000, 12), T1)
  await m.close()
  writeFileSync(join(root, 'a'), bytes(300_000, 13))
  setMtimeNs(join(root, 'a'), T1, { noFollow: true })

  const again = await openMirror(t, { root })
  const u = new Upload(nextId++, again, budget)
  u.addRefs([{ hash: a.contentId, length: a.size }])
  t.equal(await stageCode(u.stage(commitMsg('b', a.size, a.contentId), false)), 'SFM_ERR_MISSING')
  await u.discard()
  t.notOk(again.index.has(a.contentId))
  checkBudget(t, budget)
})

t.test('discard() removes the temporary file and fails the upload', async (t) => {
  const m = await openMirror(t, { root: testdir(t) })
  const budget = new CountingBudget()
  const data = bytes(200_000, 14)
  const d = digestBuffer(data)
  const u = new Upload(nextId++, m, budget)
  sendChunks(u, chunksOf(data, d))
  await u.discard()
  t.strictSame(readdirSync(m.tmpDir), [], 'the temporary file is gone')
  t.ok(u.failed)
  t.not(await stageCode(u.stage(commitMsg('f', data.length, d.contentId), false)), 'staged', 'a discarded upload cannot be staged')
  await u.discard()
  t.strictSame(readdirSync(m.tmpDir), [], 'the failed stage left nothing behind either')
  checkBudget(t, budget)

  // discarding an upload that never wrote anything is fine too
  const empty = new Upload(nextId++, m, budget)
  await empty.discard()
  t.strictSame(readdirSync(m.tmpDir), [])
})

t.test('a staged file that is discarded instead of committed leaves nothing', async (t) => {
  const m = await openMirror(t, { root: testdir(t) })
  const budget = new CountingBudget()
  const data = Buffer.from('short')
  const u = new Upload(nextId++, m, budget)
  u.addChunk({ type: 'chunk', uploadId: u.id, hash: hash128(data), data })
  await u.stage(commitMsg('f', data.length, hash128(data)), false)
  await u.discard()
  t.strictSame(readdirSync(m.tmpDir), [])
  checkBudget(t, budget)
})
