// The manifests of the mirror's files, kept in `.sfm/journal` so that a restarted server can answer
// HAVE? without reading every file again. Records are hints keyed by the file's identity on disk
// (inode, size, mtime, ctime): a file that no longer matches its record is read and chunked again, so
// the journal needs no fsync of its own and a damaged tail is simply cut off.
import { createWriteStream, type WriteStream } from 'node:fs'
import { open, readFile, rename, rm } from 'node:fs/promises'
import { hash128 } from '../../hash.js'
import { keepId } from '../../util/id-slab.js'
import { keepIds, keepLengths } from './slabs.js'

const MAGIC = Buffer.from('SFMJ0002', 'latin1')
const KIND_FILE = 1
const FIXED_BYTES = 1 + 8 + 8 + 8 + 8 + 16 + 4 // kind, ino, size, mtime, ctime, content id, chunk count

export interface JournalRecord {
  ino: bigint
  size: number
  mtimeNs: bigint
  ctimeNs: bigint
  contentId: Buffer
  ids: Buffer
  lengths: Uint32Array
}

export function encodeRecord(r: JournalRecord): Buffer {
  const n = r.lengths.length
  const bodyBytes = FIXED_BYTES + n * 20
  const out = Buffer.allocUnsafe(4 + bodyBytes + 4)
  let o = out.writeUInt32BE(bodyBytes, 0)
  o = out.writeUInt8(KIND_FILE, o)
  o = out.writeBigUInt64BE(r.ino, o)
  o = out.writeBigUInt64BE(BigInt(r.size), o)
  o = out.writeBigInt64BE(r.mtimeNs, o)
  o = out.writeBigInt64BE(r.ctimeNs, o)
  o += r.contentId.copy(out, o)
  o = out.writeUInt32BE(n, o)
  o += r.ids.copy(out, o, 0, n * 16)
  for (let i = 0; i < n; i++) o = out.writeUInt32BE(r.lengths[i]!, o)
  hash128(out.subarray(4, 4 + bodyBytes)).copy(out, o, 0, 4)
  return out
}

/** Every intact record, in order; reading stops at the first damaged or cut-off one. */
export function decodeRecords(data: Buffer): { records: JournalRecord[]; intactBytes: number } {
  const records: JournalRecord[] = []
  if (data.length < MAGIC.length || !data.subarray(0, MAGIC.length).equals(MAGIC)) {
    return { records, intactBytes: 0 }
  }
  let o = MAGIC.length
  while (o + 4 <= data.length) {
    const bodyBytes = data.readUInt32BE(o)
    const end = o + 4 + bodyBytes + 4
    if (bodyBytes < FIXED_BYTES || end > data.length) break
    const body = data.subarray(o + 4, o + 4 + bodyBytes)
    if (!hash128(body).subarray(0, 4).equals(data.subarray(end - 4, end))) break
    let b = 0
    const kind = body.readUInt8(b++)
    if (kind !== KIND_FILE) break
    const ino = body.readBigUInt64BE(b)
    const size = Number(body.readBigUInt64BE(b + 8))
    const mtimeNs = body.readBigInt64BE(b + 16)
    const ctimeNs = body.readBigInt64BE(b + 24)
    const n = body.readUInt32BE(b + 48)
    if (bodyBytes !== FIXED_BYTES + n * 20) break
    // copies into slabs: a view into `data` would keep the whole journal file in memory
    const ids = keepIds([body.subarray(b + 52, b + 52 + n * 16)])
    const contentId = n === 1 && ids.equals(body.subarray(b + 32, b + 48)) ? ids : keepId(body.subarray(b + 32, b + 48))
    b += 52 + n * 16
    const lengths = new Uint32Array(n)
    for (let i = 0; i < n; i++) lengths[i] = body.readUInt32BE(b + i * 4)
    records.push({ ino, size, mtimeNs, ctimeNs, contentId, ids, lengths: keepLengths(lengths) })
    o = end
  }
  return { records, intactBytes: o }
}

export class Journal {
  private stream: WriteStream | null = null
  private recordsWritten = 0
  /** Records appended in this turn, not yet handed to the stream. */
  private pending: Buffer[] = []
  private flushing: NodeJS.Immediate | null = null

  constructor(private readonly path: string) {}

  /** Reads the journal; a missing or foreign file reads as empty. */
  async load(): Promise<JournalRecord[]> {
    let data: Buffer
    try {
      data = await readFile(this.path)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
      throw err
    }
    const { records } = decodeRecords(data)
    this.recordsWritten = records.length
    return records
  }

  get size(): number {
    return this.recordsWritten
  }

  /** Replaces the journal with exactly these records (compaction, or a fresh start). */
  async rewrite(records: Iterable<JournalRecord>): Promise<void> {
    await this.close()
    const tmp = `${this.path}.tmp`
    const fh = await open(tmp, 'w')
    try {
      let batch: Buffer[] = [MAGIC]
      let bytes = MAGIC.length
      let count = 0
      for (const r of records) {
        const enc = encodeRecord(r)
        batch.push(enc)
        bytes += enc.length
        count++
        if (bytes > 1 << 20) {
          await fh.write(Buffer.concat(batch))
          batch = []
          bytes = 0
        }
      }
      await fh.write(Buffer.concat(batch))
      await fh.sync()
      this.recordsWritten = count
    } finally {
      await fh.close()
    }
    await rename(tmp, this.path)
  }

  /**
   * Queues a record; the records of one turn of the event loop reach the file in one write. A write
   * to the stream per record cost about 3.5 us of the main thread each, in the middle of every batch
   * of files being put in place (benchmark W2).
   */
  append(record: JournalRecord): void {
    this.pending.push(encodeRecord(record))
    this.recordsWritten++
    this.flushing ??= setImmediate(this.writePending)
  }

  private readonly writePending = (): void => {
    if (this.flushing) clearImmediate(this.flushing)
    this.flushing = null
    if (this.pending.length === 0) return
    this.stream ??= createWriteStream(this.path, { flags: 'a' })
    this.stream.write(this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending))
    this.pending = []
  }

  async close(): Promise<void> {
    this.writePending()
    const s = this.stream
    this.stream = null
    if (s) await new Promise<void>((resolve) => s.end(resolve))
  }

  async remove(): Promise<void> {
    await this.close()
    await rm(this.path, { force: true })
  }
}
