// The mirror folder on disk (src/server/mirror.ts), on real temporary folders: start-up, the lock, every
// change, the trash and its grace period, the listing, and a restart that rebuilds from the journal.
import t from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  closeSync,
  readdirSync,
  readlinkSync,
  renameSync,
  statSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
  appendFileSync,
} from 'node:fs'
import { join } from 'node:path'
import { digestBuffer } from '../src/digest.js'
import { FatalError, EXIT } from '../src/fatal.js'
import { nativeAvailable, setMtimeNs } from '../src/fs/native.js'
import { hash128 } from '../src/hash.js'
import { silentLogger, type Logger } from '../src/log.js'
import type { ListEntry } from '../src/protocol/messages.js'
import { chunkOffsets } from '../src/server/store/catalog.js'
import { Mirror, type MirrorOptions, type StagedFile } from '../src/server/mirror.js'
import { MirrorError } from '../src/server/mirror-error.js'
import { testdir } from './helpers/testdir.js'

type Test = Pick<typeof t, 'teardown' | 'ok' | 'notOk' | 'equal' | 'rejects'>

const T0 = 1_600_000_000_123_456_789n
const T1 = 1_650_000_000_987_654_321n
const T2 = 1_234_567_890_000_000_001n

t.ok(nativeAvailable, 'the native addon is built, so mtimes are exact to the ns')

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

/** Opens a mirror that the test closes at its end (unless the test closed it first). */
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

/**
 * Writes `data` as a finished upload under the mirror's tmp folder, as Upload.stage leaves a file it
 * flushed on its own; `ino` is the staged file's, to check that this very file lands in place.
 */
function stage(m: Mirror, data: Buffer, mode = 0o644, mtimeNs = T0): StagedFile & { ino: bigint } {
  const tmpPath = m.newTempPath('test')
  writeFileSync(tmpPath, data)
  chmodSync(tmpPath, mode & 0o777)
  setMtimeNs(tmpPath, mtimeNs, { noFollow: true })
  const d = digestBuffer(data)
  return {
    tmpPath,
    size: d.size,
    contentId: d.contentId,
    manifest: { ids: d.ids, lengths: Uint32Array.from(d.lengths) },
    mode,
    mtimeNs,
    ino: statSync(tmpPath, { bigint: true }).ino,
  }
}

async function commit(m: Mirror, path: string, data: Buffer, mode = 0o644, mtimeNs = T0): Promise<StagedFile & { ino: bigint }> {
  const s = stage(m, data, mode, mtimeNs)
  await m.commitFile(path, s)
  return s
}

/** Reads `length` bytes at `offset` of a file. */
function readAt(path: string, offset: number, length: number): Buffer {
  const fd = openSync(path, 'r')
  try {
    const buf = Buffer.alloc(length)
    const n = readSync(fd, buf, 0, length, offset)
    return buf.subarray(0, n)
  } finally {
    closeSync(fd)
  }
}

/** The bytes the index says it can supply for `id`, read from wherever the location points. */
function bytesFor(m: Mirror, id: Buffer): Buffer | null {
  const loc = m.index.lookup(id)[0]
  if (!loc) return null
  const abs = m.absPathOf(loc.file)
  const offsets = chunkOffsets(loc.file)
  return abs === null ? null : readAt(abs, offsets[loc.first]!, offsets[loc.last]! - offsets[loc.first]!)
}

function listingOf(m: Mirror): ListEntry[] {
  return [...m.listing()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
}

/** Every path on disk below the root, except the server's own `.sfm`. */
function diskPaths(root: string, prefix = ''): string[] {
  const out: string[] = []
  for (const name of readdirSync(prefix ? join(root, prefix) : root)) {
    if (!prefix && name === '.sfm') continue
    const p = prefix ? `${prefix}/${name}` : name
    out.push(p)
    if (lstatSync(join(root, p)).isDirectory()) out.push(...diskPaths(root, p))
  }
  return out.sort()
}

async function rejectsCode(t: Test, p: Promise<unknown>, code: string, what: string): Promise<void> {
  await t.rejects(p, { name: 'MirrorError', code }, what)
  await p.catch((err: unknown) => t.ok(err instanceof MirrorError, `${what}: a MirrorError`))
}

function capturingLogger(): { log: Logger; lines: Array<{ level: string; msg: string; fields?: Record<string, unknown> }> } {
  const lines: Array<{ level: string; msg: string; fields?: Record<string, unknown> }> = []
  const at = (level: string) => (msg: string, fields?: Record<string, unknown>) => void lines.push({ level, msg, fields })
  return { log: { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') }, lines }
}

/** How many files the server read again at start-up because the journal did not vouch for them. */
function rereadFiles(lines: Array<{ msg: string; fields?: Record<string, unknown> }>): number {
  const line = lines.find((l) => l.msg.startsWith('indexed files the journal did not cover'))
  return line ? Number(line.fields?.['files']) : 0
}

// ------------------------------------------------------------------------------------------------
// Start-up

t.test('open creates a missing root and .sfm/{tmp,trash}', async (t) => {
  const root = join(testdir(t), 'not', 'yet', 'there')
  const m = await openMirror(t, { root })
  for (const dir of [root, m.sfmDir, m.tmpDir, m.trashDir]) t.ok(statSync(dir).isDirectory(), dir)
  t.equal(m.tmpDir, join(root, '.sfm', 'tmp'))
  t.equal(m.trashDir, join(root, '.sfm', 'trash'))
  t.strictSame(listingOf(m), [])
  t.equal(m.mirrorId.length, 16)
  const id = Buffer.from(m.mirrorId)
  await m.close()
  const again = await openMirror(t, { root })
  t.strictSame(again.mirrorId, id, 'the mirror id survives a restart')
})

t.test('open refuses a root that is a file', async (t) => {
  const dir = testdir(t, { file: 'x' })
  await t.rejects(Mirror.open({ root: join(dir, 'file'), log: silentLogger }), FatalError)
})

t.test('open refuses a non-empty folder that is not a mirror, unless adopt', async (t) => {
  const root = testdir(t, { 'x.txt': 'hello', sub: { y: 'yy' } })
  const err = await Mirror.open({ root, log: silentLogger }).then(
    () => null,
    (e: unknown) => e,
  )
  t.ok(err instanceof FatalError, 'a FatalError')
  t.equal((err as FatalError).exitCode, EXIT.ENVIRONMENT)
  t.notOk(existsSync(join(root, '.sfm')), 'nothing written into the folder')

  const m = await openMirror(t, { root, adopt: true })
  t.strictSame(
    listingOf(m).map((e) => [e.path, e.kind]),
    [
      ['sub', 'dir'],
      ['sub/y', 'file'],
      ['x.txt', 'file'],
    ],
  )
  t.strictSame(bytesFor(m, hash128(Buffer.from('hello'))), Buffer.from('hello'), 'adopted content is indexed')
  await m.close()
  // from now on it is a mirror: no adopt needed
  const again = await openMirror(t, { root })
  t.equal(listingOf(again).length, 3)
})

t.test('a second open of the same root fails while the first is open, and works after close()', async (t) => {
  const root = testdir(t)
  const first = await openMirror(t, { root })
  await commit(first, 'f', Buffer.from('kept'))
  await first.delete('f') // something in the first mirror's trash
  const second = await Mirror.open({ root, log: silentLogger }).then(
    async (m) => {
      await m.close()
      return null
    },
    (e: unknown) => e,
  )
  t.ok(second instanceof FatalError, 'the second open is refused (lock)')
  // the first mirror must still own its trash: nothing the second open did may have removed it
  t.equal(readdirSync(first.trashDir).length, 1, "the first mirror's trash is intact")
  await first.close()
  const third = await openMirror(t, { root })
  t.ok(third, 'opens after close()')
})

t.test('a lock held by another live process refuses the open; a stale one is taken over', async (t) => {
  const root = testdir(t)
  const m = await openMirror(t, { root })
  await m.close()
  const child = spawn('sleep', ['60'], { stdio: 'ignore' })
  t.teardown(() => {
    if (child.exitCode === null) child.kill()
  })
  await once(child, 'spawn')
  writeFileSync(join(root, '.sfm', 'lock'), `${child.pid}\n`)
  await t.rejects(Mirror.open({ root, log: silentLogger }), { name: 'FatalError', message: new RegExp(`pid ${child.pid}`) })
  child.kill()
  await once(child, 'exit')
  const again = await openMirror(t, { root })
  t.equal(readFileSync(join(root, '.sfm', 'lock'), 'utf8').split(' ')[0], String(process.pid), 'the lock is ours now')
  await again.close()
  t.notOk(existsSync(join(root, '.sfm', 'lock')), 'close() releases the lock')
})

t.test('open removes what a killed server left in .sfm/tmp and .sfm/trash', async (t) => {
  const root = testdir(t)
  const m = await openMirror(t, { root })
  await m.close()
  writeFileSync(join(root, '.sfm', 'tmp', 'upload-1-2'), 'half an upload')
  mkdirSync(join(root, '.sfm', 'trash', '123-4'))
  writeFileSync(join(root, '.sfm', 'trash', '123-4', 'old'), 'old')
  const again = await openMirror(t, { root })
  t.strictSame(readdirSync(again.tmpDir), [])
  t.strictSame(readdirSync(again.trashDir), [])
  t.strictSame(listingOf(again), [], '.sfm is never listed')
})

// ------------------------------------------------------------------------------------------------
// COMMIT

t.test('commitFile creates missing parents and puts the file in place with its mode and mtime', async (t) => {
  const root = testdir(t)
  const m = await openMirror(t, { root })
  const data = bytes(300_000, 1)
  const s = await commit(m, 'a/b/c.bin', data, 0o640, T1)
  const abs = join(root, 'a/b/c.bin')
  t.strictSame(readFileSync(abs), data)
  const st = lstatSync(abs, { bigint: true })
  t.equal(Number(st.mode & 0o777n), 0o640)
  t.equal(st.mtimeNs, T1)
  t.equal(st.ino, s.ino, 'the staged file itself was renamed into place')
  for (const dir of ['a', 'a/b']) {
    const ds = lstatSync(join(root, dir))
    t.ok(ds.isDirectory(), `${dir} is a directory`)
    t.equal(ds.mode & 0o777, 0o755, `${dir} has mode 0755`)
  }
  t.strictSame(
    listingOf(m).map((e) => [e.path, e.kind]),
    [
      ['a', 'dir'],
      ['a/b', 'dir'],
      ['a/b/c.bin', 'file'],
    ],
  )
  t.strictSame(readdirSync(m.tmpDir), [], 'nothing left in tmp')
  t.strictSame(bytesFor(m, s.contentId), data, 'the index serves the whole file')
  t.equal(m.absPathOf(m.index.lookup(s.contentId)[0]!.file), abs)
})

t.test('commitFile replaces a file; the old content stays reachable from the trash', async (t) => {
  const root = testdir(t)
  const m = await openMirror(t, { root })
  const v1 = bytes(200_000, 2)
  const v2 = bytes(150_000, 3)
  const s1 = await commit(m, 'f', v1)
  const oldIno = lstatSync(join(root, 'f')).ino
  const s2 = await commit(m, 'f', v2, 0o600, T1)
  t.strictSame(readFileSync(join(root, 'f')), v2)
  t.equal(lstatSync(join(root, 'f'), { bigint: true }).mtimeNs, T1)

  const locs = m.index.lookup(s1.contentId)
  t.equal(locs.length, 1, 'the old content id still has a location')
  const abs = m.absPathOf(locs[0]!.file)!
  t.ok(abs.startsWith(m.trashDir + '/'), 'in the trash')
  t.equal(lstatSync(abs).ino, oldIno, 'the very file that was replaced')
  t.strictSame(bytesFor(m, s1.contentId), v1)
  const firstChunk = s1.manifest.ids.subarray(0, 16)
  t.strictSame(bytesFor(m, firstChunk), v1.subarray(0, s1.manifest.lengths[0]!), 'and its chunks')
  t.strictSame(bytesFor(m, s2.contentId), v2)
  t.strictSame(
    listingOf(m).map((e) => (e.kind === 'file' ? [e.path, e.size, e.contentId.toString('hex')] : [e.path])),
    [['f', v2.length, s2.contentId.toString('hex')]],
  )
})

t.test('commitFile replaces a directory tree', async (t) => {
  const root = testdir(t)
  const m = await openMirror(t, { root })
  await m.mkdir('d', 0o755, T0)
  const x = await commit(m, 'd/x', bytes(50_000, 4))
  await commit(m, 'd/sub/y', Buffer.from('y'))
  const data = Buffer.from('now a file')
  await commit(m, 'd', data)
  t.ok(lstatSync(join(root, 'd')).isFile())
  t.strictSame(readFileSync(join(root, 'd')), data)
  t.strictSame(
    listingOf(m).map((e) => [e.path, e.kind]),
    [['d', 'file']],
  )
  t.ok(m.absPathOf(m.index.lookup(x.contentId)[0]!.file)!.startsWith(m.trashDir + '/'), 'the old tree is in the trash')
  t.strictSame(diskPaths(root), ['d'])
})

t.test('commitFile over a symlink replaces the link, never writes through it', async (t) => {
  const dir = testdir(t, { outside: { target: 'outside bytes' } })
  const root = join(dir, 'mirror')
  const m = await openMirror(t, { root })
  await m.symlink('l', join(dir, 'outside', 'target'), T0)
  await commit(m, 'l', Buffer.from('inside'))
  t.ok(lstatSync(join(root, 'l')).isFile())
  t.equal(readFileSync(join(dir, 'outside', 'target'), 'utf8'), 'outside bytes')
})

t.test('a parent that is a symlink or a file fails with SFM_ERR_NOT_DIR, and nothing is written through it', async (t) => {
  const dir = testdir(t, { outside: {} })
  const outside = join(dir, 'outside')
  const root = join(dir, 'mirror')
  const m = await openMirror(t, { root })
  await m.symlink('link', outside, T0)
  await m.symlink('rel', '../outside', T0)
  await commit(m, 'f', Buffer.from('a file'))
  await commit(m, 'src', Buffer.from('to be moved'))

  for (const parent of ['link', 'rel', 'f']) {
    await rejectsCode(t, m.commitFile(`${parent}/x`, stage(m, Buffer.from('x'))), 'SFM_ERR_NOT_DIR', `commit ${parent}/x`)
    await rejectsCode(t, m.commitFile(`${parent}/deep/er/x`, stage(m, Buffer.from('x'))), 'SFM_ERR_NOT_DIR', `commit ${parent}/deep/er/x`)
    await rejectsCode(t, m.mkdir(`${parent}/d`, 0o755, T0), 'SFM_ERR_NOT_DIR', `mkdir ${parent}/d`)
    await rejectsCode(t, m.symlink(`${parent}/s`, '/etc', T0), 'SFM_ERR_NOT_DIR', `symlink ${parent}/s`)
    await rejectsCode(t, m.rename('src', `${parent}/moved`), 'SFM_ERR_NOT_DIR', `rename src -> ${parent}/moved`)
  }
  t.strictSame(readdirSync(outside), [], 'the outside folder stays empty')
  t.strictSame(diskPaths(root), ['f', 'link', 'rel', 'src'])
  t.equal(readFileSync(join(root, 'f'), 'utf8'), 'a file')
})

t.test('a directory swapped for a symlink behind the server is not written or deleted through', async (t) => {
  // [M-SEM-6] "It never follows a symlink in a path it writes or deletes." The model still says `d` is a
  // directory; whoever can write to the mirror folder swaps it for a link to a folder outside the root.
  const dir = testdir(t, { outside: { victim: 'outside bytes' } })
  const outside = join(dir, 'outside')
  const root = join(dir, 'mirror')
  const m = await openMirror(t, { root })
  await commit(m, 'd/victim', Buffer.from('mirror bytes'))
  renameSync(join(root, 'd'), join(dir, 'd-moved-away'))
  symlinkSync(outside, join(root, 'd'))

  const wrote = await m.commitFile('d/new', stage(m, Buffer.from('client bytes'))).then(
    () => 'written',
    (e: MirrorError) => e.code,
  )
  t.not(wrote, 'written', 'COMMIT below the swapped directory is refused')
  await m.delete('d/victim').catch(() => {})
  t.strictSame(readdirSync(outside).sort(), ['victim'], 'nothing was created in or removed from the outside folder')
})

// ------------------------------------------------------------------------------------------------
// DELETE and the trash

t.test('delete moves to the trash; rename of the deleted path restores it during the grace period', async (t) => {
  const root = testdir(t)
  const m = await openMirror(t, { root, trashTtlMs: 60_000 })
  await m.mkdir('d', 0o750, T0)
  const x = await commit(m, 'd/x', bytes(100_000, 5), 0o600, T1)
  await commit(m, 'd/sub/y', Buffer.from('y'))
  await m.setattr('d/sub', 0o700, T2)
  const f = await commit(m, 'f', Buffer.from('plain file'), 0o640, T2)
  await m.setattr('d', 0o750, T0)
  const before = listingOf(m)

  await m.delete('d')
  await m.delete('f')
  t.strictSame(diskPaths(root), [])
  t.strictSame(listingOf(m), [])
  t.equal(readdirSync(m.trashDir).length, 2, 'both in the trash')
  t.strictSame(bytesFor(m, x.contentId), bytes(100_000, 5), 'deleted content can still be referenced')
  t.strictSame(await m.delete('d'), new Set(), 'deleting what is not there succeeds [M-DELETE-1]')

  await m.rename('d', 'd2')
  await m.rename('f', 'f2')
  t.strictSame(diskPaths(root), ['d2', 'd2/sub', 'd2/sub/y', 'd2/x', 'f2'])
  t.strictSame(readFileSync(join(root, 'd2/x')), bytes(100_000, 5))
  t.equal(lstatSync(join(root, 'f2'), { bigint: true }).mtimeNs, T2)
  t.equal(lstatSync(join(root, 'f2')).mode & 0o777, 0o640)
  t.strictSame(
    listingOf(m).map((e) => ({ ...e, path: e.path.replace(/^d2/, 'd').replace(/^f2$/, 'f') })),
    before.map((e) => (e.kind === 'dir' ? { ...e, mtimeNs: lstatSync(join(root, e.path.replace(/^d/, 'd2')), { bigint: true }).mtimeNs } : e)),
    'the restored entries list as before (directory mtimes as on disk)',
  )
  t.strictSame(readdirSync(m.trashDir), [], 'restored items leave the trash')
  t.equal(m.absPathOf(m.index.lookup(f.contentId)[0]!.file), join(root, 'f2'))
})

t.test('after expireTrash, a deleted path can no longer be restored: SFM_ERR_NOT_FOUND', async (t) => {
  const root = testdir(t)
  const m = await openMirror(t, { root, trashTtlMs: 100 })
  const e = await commit(m, 'e', bytes(70_000, 6))
  await m.delete('e')
  await new Promise((r) => setTimeout(r, 250))
  await m.expireTrash()
  t.strictSame(readdirSync(m.trashDir), [])
  t.strictSame(m.index.lookup(e.contentId), [], 'its content is no longer offered')
  await rejectsCode(t, m.rename('e', 'e2'), 'SFM_ERR_NOT_FOUND', 'rename of an expired path')
  t.strictSame(diskPaths(root), [])
})

t.test('expireTrash keeps items within their grace period, and expireTrash(true) removes them all', async (t) => {
  const root = testdir(t)
  const m = await openMirror(t, { root, trashTtlMs: 60_000 })
  await commit(m, 'a', Buffer.from('a'))
  await commit(m, 'b', Buffer.from('b'))
  await m.delete('a')
  await m.delete('b')
  t.equal(await m.expireTrash(), 0)
  t.equal(readdirSync(m.trashDir).length, 2)
  t.equal(await m.expireTrash(true), 2)
  t.strictSame(readdirSync(m.trashDir), [])
  await rejectsCode(t, m.rename('a', 'c'), 'SFM_ERR_NOT_FOUND', 'rename after expireTrash(true)')
})

t.test('a RENAME that brings an item back while a sweep is removing others keeps it (found by fuzzing)', async (t) => {
  const root = testdir(t)
  const m = await openMirror(t, { root, trashTtlMs: 60_000 })
  await m.mkdir('x', 0o755, T0)
  for (let i = 0; i < 20; i++) await commit(m, `x/f${i}`, Buffer.from(`x${i}`))
  await m.mkdir('y', 0o755, T0)
  await commit(m, 'y/kept', Buffer.from('kept'))
  await m.delete('x')
  await m.delete('y')
  // a sweep of everything (as on a full disk) takes x first and awaits its removal; the RENAME runs
  // meanwhile and restores y
  const sweep = m.expireTrash(true)
  await m.rename('y', 'z')
  t.equal(await sweep, 1, 'the sweep removed x only')
  t.strictSame(
    listingOf(m).map((e) => e.path),
    ['z', 'z/kept'],
    'the restored tree is still in the catalog',
  )
  t.strictSame(diskPaths(root), ['z', 'z/kept'], 'and on disk')
})

// ------------------------------------------------------------------------------------------------
// RENAME, SETATTR, MKDIR, SYMLINK

t.test('rename into its own subtree, or onto itself, is SFM_ERR_INVALID and changes nothing', async (t) => {
  const root = testdir(t)
  const m = await openMirror(t, { root })
  await commit(m, 'd/e/f', Buffer.from('f'))
  await rejectsCode(t, m.rename('d', 'd/e/g'), 'SFM_ERR_INVALID', 'into its subtree')
  await rejectsCode(t, m.rename('d', 'd/x'), 'SFM_ERR_INVALID', 'into itself')
  await rejectsCode(t, m.rename('d', 'd'), 'SFM_ERR_INVALID', 'onto itself')
  t.strictSame(diskPaths(root), ['d', 'd/e', 'd/e/f'])
})

t.test('rename moves a subtree, creating missing parents, and replaces what was at the target', async (t) => {
  const root = testdir(t)
  const m = await openMirror(t, { root })
  const x = await commit(m, 'd/x', bytes(40_000, 7))
  const old = await commit(m, 'n/m/d', Buffer.from('was here'))
  await m.rename('d', 'n/m/d')
  t.strictSame(diskPaths(root), ['n', 'n/m', 'n/m/d', 'n/m/d/x'])
  t.strictSame(
    listingOf(m).map((e) => e.path),
    ['n', 'n/m', 'n/m/d', 'n/m/d/x'],
  )
  t.equal(m.absPathOf(m.index.lookup(x.contentId)[0]!.file), join(root, 'n/m/d/x'), 'the index follows the move')
  t.strictSame(bytesFor(m, old.contentId), Buffer.from('was here'), 'the replaced file is kept in the trash')
  await rejectsCode(t, m.rename('never', 'x'), 'SFM_ERR_NOT_FOUND', 'rename of a path that never existed')
})

t.test('setattr: missing is SFM_ERR_NOT_FOUND; files, directories and symlinks', async (t) => {
  const dir = testdir(t, { outside: { t: 'target' } })
  const root = join(dir, 'mirror')
  const m = await openMirror(t, { root })
  await rejectsCode(t, m.setattr('nope', 0o644, T0), 'SFM_ERR_NOT_FOUND', 'setattr of a missing path')
  await rejectsCode(t, m.setattr('nope/deeper', 0o644, T0), 'SFM_ERR_NOT_FOUND', 'setattr below a missing path')

  await commit(m, 'f', Buffer.from('f'))
  await m.setattr('f', 0o604, T2)
  let st = lstatSync(join(root, 'f'), { bigint: true })
  t.equal(Number(st.mode & 0o777n), 0o604)
  t.equal(st.mtimeNs, T2)

  await m.mkdir('d', 0o755, T0)
  await m.setattr('d', 0o500, T1)
  st = lstatSync(join(root, 'd'), { bigint: true })
  t.equal(Number(st.mode & 0o777n), 0o700, 'the owner keeps rwx on directories')
  t.equal(st.mtimeNs, T1)
  t.equal(listingOf(m).find((e) => e.path === 'd')!.mode, 0o700, 'and the listing reports the applied mode [M-CONV-4]')

  const target = join(dir, 'outside', 't')
  const targetBefore = lstatSync(target, { bigint: true })
  await m.symlink('l', target, T0)
  await m.setattr('l', 0o777, T1)
  st = lstatSync(join(root, 'l'), { bigint: true })
  t.ok(st.isSymbolicLink())
  t.equal(st.mtimeNs, T1, "the link's own mtime")
  const targetAfter = lstatSync(target, { bigint: true })
  t.equal(targetAfter.mtimeNs, targetBefore.mtimeNs, "the target's mtime is untouched")
  t.equal(targetAfter.mode, targetBefore.mode, "the target's mode is untouched")
})

t.test('mkdir over an existing file replaces it; over a directory it changes only the attributes', async (t) => {
  const root = testdir(t)
  const m = await openMirror(t, { root })
  const x = await commit(m, 'x', bytes(60_000, 8))
  await m.mkdir('x', 0o750, T1)
  let st = lstatSync(join(root, 'x'), { bigint: true })
  t.ok(st.isDirectory())
  t.equal(Number(st.mode & 0o777n), 0o750)
  t.equal(st.mtimeNs, T1)
  t.ok(m.absPathOf(m.index.lookup(x.contentId)[0]!.file)!.startsWith(m.trashDir + '/'), 'the file went to the trash')
  t.strictSame(
    listingOf(m).map((e) => [e.path, e.kind, e.mode]),
    [['x', 'dir', 0o750]],
  )

  await commit(m, 'x/inner', Buffer.from('inner'))
  await m.mkdir('x', 0o711, T2)
  st = lstatSync(join(root, 'x'), { bigint: true })
  t.equal(Number(st.mode & 0o777n), 0o711)
  t.equal(st.mtimeNs, T2)
  t.strictSame(diskPaths(root), ['x', 'x/inner'], 'contents stay')

  await m.symlink('s', 'somewhere', T0)
  await m.mkdir('s', 0o755, T0)
  t.ok(lstatSync(join(root, 's')).isDirectory(), 'mkdir over a symlink replaces it')
})

t.test('symlink: stored as given, never followed, replaces what was there', async (t) => {
  const dir = testdir(t, { outside: { keep: 'keep' } })
  const outside = join(dir, 'outside')
  const root = join(dir, 'mirror')
  const m = await openMirror(t, { root })
  const outsideBefore = lstatSync(outside, { bigint: true }).mtimeNs

  await m.symlink('abs', outside, T0)
  await m.symlink('dangling', '/no/such/thing', T1)
  await m.symlink('up', '../../..', T2)
  for (const [path, target, mtimeNs] of [
    ['abs', outside, T0],
    ['dangling', '/no/such/thing', T1],
    ['up', '../../..', T2],
  ] as const) {
    const st = lstatSync(join(root, path), { bigint: true })
    t.ok(st.isSymbolicLink(), `${path} is a symlink`)
    t.equal(readlinkSync(join(root, path)), target)
    t.equal(st.mtimeNs, mtimeNs)
  }
  // replacing the link to a directory goes to the link, not into the directory
  await m.symlink('abs', 'elsewhere', T1)
  t.equal(readlinkSync(join(root, 'abs')), 'elsewhere')
  t.strictSame(readdirSync(outside), ['keep'])
  t.equal(lstatSync(outside, { bigint: true }).mtimeNs, outsideBefore)

  // over a file and over a directory tree
  const f = await commit(m, 'f', Buffer.from('file'))
  await m.symlink('f', 'x', T0)
  t.ok(lstatSync(join(root, 'f')).isSymbolicLink())
  t.strictSame(m.index.lookup(f.contentId), [], 'the replaced file is no longer offered')
  await commit(m, 'd/inner', Buffer.from('inner'))
  await m.symlink('d', 'y', T0)
  t.ok(lstatSync(join(root, 'd')).isSymbolicLink())
  t.strictSame(diskPaths(root), ['abs', 'd', 'dangling', 'f', 'up'])
  t.strictSame(readdirSync(m.tmpDir), [])
  t.strictSame(
    listingOf(m).filter((e) => e.kind === 'symlink').map((e) => [e.path, e.mode, (e as { target: string }).target]),
    [
      ['abs', 0, 'elsewhere'],
      ['d', 0, 'y'],
      ['dangling', 0, '/no/such/thing'],
      ['f', 0, 'x'],
      ['up', 0, '../../..'],
    ],
  )
})

// ------------------------------------------------------------------------------------------------
// LISTING

async function buildSample(m: Mirror): Promise<Map<string, StagedFile>> {
  const files = new Map<string, StagedFile>()
  await m.mkdir('docs', 0o750, T0)
  files.set('docs/a.txt', await commit(m, 'docs/a.txt', Buffer.from('alpha\n'), 0o644, T1))
  files.set('docs/big.bin', await commit(m, 'docs/big.bin', bytes(400_000, 9), 0o600, T2))
  files.set('run.sh', await commit(m, 'run.sh', Buffer.from('#!/bin/sh\n'), 0o755, T0))
  files.set('empty', await commit(m, 'empty', Buffer.alloc(0), 0o644, T1))
  files.set('deep/er/est', await commit(m, 'deep/er/est', Buffer.from('x'), 0o644, T0)) // parents made implicitly
  await m.mkdir('empty-dir', 0o755, T2)
  await m.symlink('link', 'docs/a.txt', T1)
  await m.symlink('docs/up', '..', T2)
  return files
}

t.test('listing() reports what is on disk: kinds, modes and mtimes to the ns', async (t) => {
  const root = testdir(t)
  const m = await openMirror(t, { root })
  const files = await buildSample(m)
  const listing = listingOf(m)
  t.strictSame(
    listing.map((e) => e.path),
    diskPaths(root),
    'every entry on disk, once',
  )
  for (const e of listing) {
    const st = lstatSync(join(root, e.path), { bigint: true })
    const kind = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'other'
    t.equal(e.kind, kind, `${e.path}: kind`)
    t.equal(e.mtimeNs, st.mtimeNs, `${e.path}: mtime`)
    if (e.kind === 'file') {
      t.equal(e.mode, Number(st.mode & 0o777n), `${e.path}: mode`)
      t.equal(e.size, Number(st.size), `${e.path}: size`)
      t.strictSame(e.contentId, digestBuffer(readFileSync(join(root, e.path))).contentId, `${e.path}: content id`)
      t.strictSame(e.contentId, files.get(e.path)!.contentId)
    } else if (e.kind === 'dir') {
      t.equal(e.mode | 0o700, Number(st.mode & 0o777n), `${e.path}: mode`)
    } else {
      t.equal(e.mode, 0, `${e.path}: a symlink's mode is 0`)
      t.equal(e.target, readlinkSync(join(root, e.path)), `${e.path}: target`)
    }
  }
  t.equal(listing.find((e) => e.path === 'empty-dir')!.mtimeNs, T2, 'an untouched directory keeps the mtime it was given')
  t.equal(listing.find((e) => e.path === 'docs')!.mode, 0o750)
  t.equal(listing.find((e) => e.path === 'deep')!.mode, 0o755, 'implicit parents are 0755')
})

// ------------------------------------------------------------------------------------------------
// Restart

t.test('a restart rebuilds the catalog and index, taking manifests from the journal', async (t) => {
  const root = testdir(t)
  const m = await openMirror(t, { root })
  const files = await buildSample(m)
  await m.setattr('run.sh', 0o700, T2) // a journal record written after the commit's
  await m.rename('docs/a.txt', 'docs/renamed.txt')
  files.set('docs/renamed.txt', files.get('docs/a.txt')!)
  files.delete('docs/a.txt')
  const before = listingOf(m)
  await m.close()

  const { log, lines } = capturingLogger()
  const again = await openMirror(t, { root, log })
  t.strictSame(listingOf(again), before, 'the same listing')
  t.equal(rereadFiles(lines), 0, 'no file was read again: every manifest came from the journal')
  for (const [path, s] of files) {
    const locs = again.index.lookup(s.contentId)
    if (s.size === 0) continue // the empty file has no chunks to offer
    t.equal(locs.length, 1, `${path}: found`)
    t.equal(again.absPathOf(locs[0]!.file), join(root, path), `${path}: at its path`)
    t.strictSame(bytesFor(again, s.contentId), readFileSync(join(root, path)), `${path}: the right bytes`)
    const lastChunk = s.manifest.ids.subarray(s.manifest.ids.length - 16)
    t.ok(again.index.has(lastChunk), `${path}: chunk ids too`)
  }
})

t.test('a restart keeps reporting the same (applied) modes', async (t) => {
  // PROTOCOL.md 3.4 [M-CONV-4]: the server keeps rwx for the owner on directories, never sets
  // set-user-id, and reports the mode it applied; after a restart it reads the same modes from disk,
  // so a client comparing applied forms sees no difference and sends no SETATTR again.
  const root = testdir(t)
  const m = await openMirror(t, { root })
  await m.mkdir('ro', 0o555, T0)
  await commit(m, 'suid', Buffer.from('#!/bin/sh\n'), 0o4755, T0)
  const before = listingOf(m)
  t.strictSame(
    before.map((e) => [e.path, e.mode]),
    [
      ['ro', 0o755],
      ['suid', 0o755],
    ],
  )
  await m.close()
  const again = await openMirror(t, { root })
  t.strictSame(
    listingOf(again).map((e) => [e.path, e.mode]),
    [
      ['ro', 0o755],
      ['suid', 0o755],
    ],
    'the same modes after the restart',
  )
})

t.test('a restart with a damaged journal tail still works and still indexes every file', async (t) => {
  const root = testdir(t)
  const m = await openMirror(t, { root })
  const files = await buildSample(m)
  await m.close()
  const journal = join(root, '.sfm', 'journal')
  truncateSync(journal, statSync(journal).size - 5) // the last record is cut off

  const { log, lines } = capturingLogger()
  const again = await openMirror(t, { root, log })
  t.equal(rereadFiles(lines), 1, 'only the file whose record was lost is read again')
  for (const [path, s] of files) {
    if (s.size > 0) t.strictSame(bytesFor(again, s.contentId), readFileSync(join(root, path)), `${path}: indexed`)
  }
  await again.close()

  // the start-up rewrote a clean journal: the next restart reads nothing again
  appendFileSync(journal, Buffer.from('garbage that is not a record'))
  const third = capturingLogger()
  const m3 = await openMirror(t, { root, log: third.log })
  t.equal(rereadFiles(third.lines), 0, 'garbage after the last record costs nothing')
  await m3.close()

  writeFileSync(journal, 'not a journal at all')
  const fourth = capturingLogger()
  const m4 = await openMirror(t, { root, log: fourth.log })
  t.equal(rereadFiles(fourth.lines), files.size, 'a foreign journal: every file is read again')
  for (const [path, s] of files) {
    if (s.size > 0) t.strictSame(bytesFor(m4, s.contentId), readFileSync(join(root, path)), `${path}: indexed`)
  }
})

t.test('a restart reads again a file changed behind the server (same size and mtime)', async (t) => {
  const root = testdir(t)
  const m = await openMirror(t, { root })
  const s = await commit(m, 'f', bytes(100_000, 10), 0o644, T1)
  await commit(m, 'g', bytes(100_000, 11), 0o644, T1)
  await m.close()
  const changed = bytes(100_000, 12)
  writeFileSync(join(root, 'f'), changed) // same inode, same size
  setMtimeNs(join(root, 'f'), T1, { noFollow: true })
  t.equal(lstatSync(join(root, 'f'), { bigint: true }).mtimeNs, T1)

  const { log, lines } = capturingLogger()
  const again = await openMirror(t, { root, log })
  t.equal(rereadFiles(lines), 1, 'the changed file is read again, the other is not')
  t.strictSame(again.index.lookup(s.contentId), [], 'the old content is not offered')
  t.strictSame(bytesFor(again, digestBuffer(changed).contentId), changed, 'the new content is')
  const entry = listingOf(again).find((e) => e.path === 'f')!
  t.strictSame(entry.kind === 'file' && entry.contentId, digestBuffer(changed).contentId, 'the listing has the new content id')
})
