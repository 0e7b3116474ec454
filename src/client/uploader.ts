// Uploading one regular file: read and chunk it (reading it again if it changed meanwhile), find out
// top-down through its content tree what the server already has, then send REFS for that and CHUNK for
// the rest, and COMMIT. The server never receives a mixture of two versions: every chunk sent is checked
// against the id computed when the file was read, and the file's identity is checked before COMMIT.
import { closeSync, constants as fsc, fstatSync, openSync, readSync } from 'node:fs'
import { lstat, open, type FileHandle } from 'node:fs/promises'
import { digestBuffer, digestFile, identityOf, sameIdentity, type FileIdentity } from '../digest.js'
import { HASH_BYTES, hash128, hashKey } from '../hash.js'
import type { Ref } from '../protocol/messages.js'
import type { ContentTree } from '../tree.js'
import type { Connection, Outcome } from './connection.js'
import type { KnownContent } from './known.js'

/** Files up to this size are read once and kept in memory until sent. */
export const SMALL_FILE_BYTES = 1 << 20
const READ_BLOCK_BYTES = 4 << 20
/**
 * A file modified less than this long ago may be in the middle of being written (a program that
 * truncates and rewrites in pieces): a read of it is kept only once the file has been quiet this long.
 */
const SETTLE_MS = 30
/** ...but a file that never stops changing (a busy log) is sent as read, at most this much later. */
const MAX_SETTLE_MS = 2_000

export type Span =
  | { readonly ref: true; readonly id: Buffer; readonly length: number }
  | { readonly ref: false; readonly id: Buffer; readonly offset: number; readonly length: number }

export interface PreparedFile {
  readonly kind: 'ready'
  readonly abs: string
  readonly identity: FileIdentity
  readonly contentId: Buffer
  readonly tree: ContentTree
  /** The file's bytes, for small files; dropped (set to null) once they are sent. */
  bytes: Buffer | null
}

/** Why a file could not be read consistently: it vanished or is not a file now, or it kept changing. */
export type NotReady = { readonly kind: 'gone' } | { readonly kind: 'unstable' }

export interface SendResult {
  /** Bytes sent as CHUNK data. */
  dataBytes: number
  outcome: Outcome | 'changed'
}

/**
 * Reads and digests a file: again if it changed while being read, and only once it has been quiet for
 * SETTLE_MS (or MAX_SETTLE_MS have passed), so a half-rewritten file is not taken for a version.
 */
export async function readFileDigest(abs: string): Promise<PreparedFile | NotReady> {
  const start = Date.now()
  for (let attempt = 0; ; attempt++) {
    const overdue = Date.now() - start > MAX_SETTLE_MS
    let r: PreparedFile | null
    try {
      r = await readOnce(abs)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT' || code === 'ELOOP' || code === 'EISDIR' || code === 'EINVAL' || code === 'ENOTDIR') {
        return { kind: 'gone' }
      }
      throw err
    }
    if (r) {
      const quietMs = Date.now() - Number(r.identity.mtimeNs / 1_000_000n)
      if (quietMs >= SETTLE_MS || overdue) return r
      await sleep(SETTLE_MS - quietMs)
      if (await unchangedSince(abs, r.identity)) return r
    } else if (overdue) {
      return { kind: 'unstable' }
    } else {
      await sleep(Math.min(5 * 2 ** attempt, 200))
    }
  }
}

/** Files up to this size are read ahead many at once (readSmallFilesDigest). */
export const BATCH_READ_BYTES = 64 << 10

/**
 * Reads and digests small files all at once, in one job on the thread pool where the addon is built:
 * for a pass over many small files, the system calls of each read on the main thread, and the objects
 * Node makes for them, cost more than the rest of the file's way to the server. A file that could not
 * be read so (gone, grown past `sizes`, changed while it was read, or written less than SETTLE_MS ago)
 * gets null, as does every file without the addon: readFileDigest() reads those one by one, and
 * knows what to make of them.
 */
export async function readSmallFilesDigest(abss: readonly string[], sizes: readonly number[]): Promise<Array<PreparedFile | null>> {
  const native = await import('../fs/native.js') // loaded at first use: a run with nothing to send never needs it
  const read = await native.readSmallFiles(abss, sizes)?.catch(() => null)
  if (!read) return abss.map(() => null)
  const now = Date.now()
  return read.map((r, i) => {
    if (typeof r === 'number' || now - Number(r.mtimeNs / 1_000_000n) < SETTLE_MS) return null
    const d = digestBuffer(r.bytes)
    const identity: FileIdentity = { size: r.size, mtimeNs: r.mtimeNs, ctimeNs: r.ctimeNs, ino: r.ino }
    return { kind: 'ready', abs: abss[i]!, identity, contentId: d.contentId, tree: d.tree, bytes: r.bytes }
  })
}

async function unchangedSince(abs: string, identity: FileIdentity): Promise<boolean> {
  try {
    return sameIdentity(identity, identityOf(await lstat(abs, { bigint: true })))
  } catch {
    return false
  }
}

/**
 * One read of the file: null if it changed while being read. A small file is read with synchronous
 * calls: four system calls of a few microseconds each, where the thread pool's promise machinery costs
 * tens of microseconds per call and dominated the time of syncing many small files.
 */
async function readOnce(abs: string): Promise<PreparedFile | null> {
  const fd = openSync(abs, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK)
  let small: { bytes: Buffer; before: FileIdentity } | null = null
  try {
    const st = fstatSync(fd, { bigint: true })
    if (!st.isFile()) throw Object.assign(new Error('not a regular file'), { code: 'EINVAL' })
    if (st.size <= BigInt(SMALL_FILE_BYTES)) {
      const before = identityOf(st)
      const bytes = fileBuffer(before.size + 1) // one spare byte shows a file that grew
      let n = 0
      for (;;) {
        const want = bytes.length - n
        const got = readSync(fd, bytes, n, want, n)
        n += got
        // A short read of a regular file ends at its end: no second call to be told so. Growth after
        // it shows in the fstat below.
        if (got < want || n === bytes.length) break
      }
      const after = identityOf(fstatSync(fd, { bigint: true }))
      if (n !== before.size || !sameIdentity(before, after)) return null
      small = { bytes: bytes.subarray(0, n), before }
    }
  } finally {
    closeSync(fd)
  }
  if (small) {
    const d = digestBuffer(small.bytes)
    return { kind: 'ready', abs, identity: small.before, contentId: d.contentId, tree: d.tree, bytes: small.bytes }
  }
  const d = await digestFile(abs)
  if (!sameIdentity(d.statBefore, d.statAfter)) return null
  return { kind: 'ready', abs, identity: d.statBefore, contentId: d.contentId, tree: d.tree, bytes: null }
}

/**
 * Small files' bytes are carved from slabs of their own. One ArrayBuffer per file (allocUnsafeSlow)
 * piled up, tens of MiB of them, until a major GC (benchmark W2: sfmc's peak RSS); Node's shared pool
 * would mix them with long-lived ids, which would keep whole slabs alive. Only file bytes on their way
 * to the server live in these, so a slab is freed soon after its last file is sent.
 */
const SLAB_BYTES = 256 << 10
const SLAB_PART_MAX_BYTES = 32 << 10
let slab = Buffer.allocUnsafeSlow(0)
let slabUsed = 0

function fileBuffer(size: number): Buffer {
  if (size > SLAB_PART_MAX_BYTES) return Buffer.allocUnsafeSlow(size)
  if (slabUsed + size > slab.length) {
    slab = Buffer.allocUnsafeSlow(SLAB_BYTES)
    slabUsed = 0
  }
  const bytes = slab.subarray(slabUsed, slabUsed + size)
  slabUsed += size
  return bytes
}

/**
 * Which parts of the file the server needs: asks HAVE? level by level from the root, skipping ids the
 * client already knows the server has, and descending only into what is missing. Returns the file as
 * spans in order: REF for content the server has, data for chunks it does not.
 */
export async function negotiate(tree: ContentTree, conn: Connection, known: KnownContent): Promise<Span[]> {
  const levels = tree.levels
  if (levels[0]!.count === 0) return []
  if (levels.length === 1) {
    // One chunk, whose id is the content id: most small files. One question, nothing to walk.
    const id = tree.contentId
    const has = known.has(id) || (await conn.have([id]))[0]!
    if (has) known.add(id)
    return [has ? { ref: true, id, length: tree.size } : { ref: false, id, offset: 0, length: tree.size }]
  }
  const HAVE = 1
  const MISSING = 2
  const state = levels.map((l) => new Uint8Array(l.count))
  // entries whose answer is already known to be "no" (they stand for a parent that was missing)
  const knownMissing = levels.map((l) => new Uint8Array(l.count))
  let frontier: Array<[number, number]> = [[levels.length - 1, 0]]
  while (frontier.length > 0) {
    const ask = frontier.filter(([l, i]) => !knownMissing[l]![i] && !known.has(tree.entryId(l, i)))
    const answers = ask.length > 0 ? await conn.have(ask.map(([l, i]) => tree.entryId(l, i))) : []
    const answerOf = new Map<string, boolean>()
    ask.forEach(([l, i], k) => answerOf.set(`${l}:${i}`, answers[k]!))
    const next: Array<[number, number]> = []
    for (const [l, i] of frontier) {
      const id = tree.entryId(l, i)
      const has = !knownMissing[l]![i] && (known.has(id) || answerOf.get(`${l}:${i}`) === true)
      if (has) {
        state[l]![i] = HAVE
        known.add(id)
      } else {
        state[l]![i] = MISSING
        if (l === 0) continue
        const lv = levels[l]!
        const start = lv.childStart[i]!
        const count = lv.childCount[i]!
        for (let c = start; c < start + count; c++) {
          if (count === 1) knownMissing[l - 1]![c] = 1 // same id as this entry: no need to ask again
          next.push([l - 1, c])
        }
      }
    }
    frontier = next
  }
  const spans: Span[] = []
  const emit = (l: number, i: number): void => {
    const lv = levels[l]!
    if (state[l]![i] === HAVE) spans.push({ ref: true, id: Buffer.from(tree.entryId(l, i)), length: lv.lengths[i]! })
    else if (l === 0) spans.push({ ref: false, id: Buffer.from(tree.entryId(0, i)), offset: lv.offsets[i]!, length: lv.lengths[i]! })
    else for (let c = lv.childStart[i]!; c < lv.childStart[i]! + lv.childCount[i]!; c++) emit(l - 1, c)
  }
  emit(levels.length - 1, 0)
  return spans
}

/**
 * Streams the spans of an upload: REFS for what the server has (and for chunks repeated within the
 * file), CHUNK for the rest, each checked against its id. Returns 'changed' (after ABORT) if the file's
 * bytes no longer match what was read.
 */
export async function streamSpans(prep: PreparedFile, spans: readonly Span[], conn: Connection, uploadId: number): Promise<{ dataBytes: number; changed: boolean }> {
  let refs: Ref[] = []
  // ids sent as CHUNK so far, for chunks repeated within the file; a file of one span has none
  const sent = spans.length > 1 ? new Set<string>() : null
  let dataBytes = 0
  const reader = prep.bytes ? null : new BlockReader(prep.abs)
  try {
    for (const span of spans) {
      if (span.ref) {
        refs.push({ hash: span.id, length: span.length })
        continue
      }
      const key = sent ? hashKey(span.id) : ''
      if (sent?.has(key)) {
        refs.push({ hash: span.id, length: span.length }) // REFS may name a chunk sent earlier in this upload
        continue
      }
      if (refs.length > 0) {
        conn.refs(uploadId, refs)
        refs = []
      }
      // bytes kept in memory since they were hashed are sent as they are; bytes read again are checked
      const data = prep.bytes ? prep.bytes.subarray(span.offset, span.offset + span.length) : await reader!.read(span.offset, span.length)
      if (!data || (reader && !hash128(data).equals(span.id))) return { dataBytes, changed: true }
      await conn.writable()
      conn.chunk(uploadId, span.id, data)
      sent?.add(key)
      dataBytes += data.length
    }
    if (refs.length > 0) conn.refs(uploadId, refs)
    if (reader && !(await reader.unchanged(prep.identity))) return { dataBytes, changed: true }
    return { dataBytes, changed: false }
  } finally {
    await reader?.close()
  }
}

/** Sequential reads of a large file in big blocks: chunk spans come in increasing offset order. */
class BlockReader {
  private fh: FileHandle | null = null
  private block: Buffer | null = null
  private blockStart = 0

  constructor(private readonly abs: string) {}

  async read(offset: number, length: number): Promise<Buffer | null> {
    if (!this.block || offset < this.blockStart || offset + length > this.blockStart + this.block.length) {
      this.fh ??= await open(this.abs, fsc.O_RDONLY | fsc.O_NOFOLLOW).catch(() => null)
      if (!this.fh) return null
      // a new buffer each time: the previous one may still be queued in the socket
      const want = Math.max(length, READ_BLOCK_BYTES)
      const buf = Buffer.allocUnsafe(want)
      let n = 0
      while (n < want) {
        const { bytesRead } = await this.fh.read(buf, n, want - n, offset + n)
        if (bytesRead === 0) break
        n += bytesRead
      }
      if (n < length) return null
      this.block = buf.subarray(0, n)
      this.blockStart = offset
    }
    return this.block.subarray(offset - this.blockStart, offset - this.blockStart + length)
  }

  async unchanged(identity: FileIdentity): Promise<boolean> {
    if (!this.fh) return true
    return sameIdentity(identity, identityOf(await this.fh.stat({ bigint: true })))
  }

  async close(): Promise<void> {
    await this.fh?.close()
    this.fh = null
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}

/**
 * Every id of the tree, for remembering what the server has after a COMMIT succeeded: the leaves, and
 * each node that is not merely its one child again, HASH_BYTES each, level by level up to the content
 * id, which comes last.
 */
export function treeIds(tree: ContentTree): Buffer {
  const levels = tree.levels
  if (levels.length === 1) return levels[0]!.ids // a file of one chunk (or none): the ids are the tree
  const out = Buffer.allocUnsafe(levels.reduce((n, lv) => n + lv.count, 0) * HASH_BYTES)
  let at = 0
  for (let l = 0; l < levels.length; l++) {
    const lv = levels[l]!
    for (let i = 0; i < lv.count; i++) if (l === 0 || lv.childCount[i] !== 1) at += lv.ids.copy(out, at, i * HASH_BYTES, (i + 1) * HASH_BYTES)
  }
  return out.subarray(0, at)
}
