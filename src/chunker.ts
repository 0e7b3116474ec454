// Content-defined chunking: FastCDC with a 32-bit Gear hash, exactly as PROTOCOL.md 5.4 defines it.
import { createHash } from 'node:crypto'
import { cutChunksOffThread, type CutChunks } from './native/chunker-addon.js'

// Chosen by measurement on successive versions of real source trees, binaries and logs (PROTOCOL.md 15).
export const CDC_MIN_BYTES = 16_384
export const CDC_NORMAL_BYTES = 24_576
export const CDC_MAX_BYTES = 131_072
export const MASK_S = 0x7fff0000 // 15 one-bits, used below CDC_NORMAL_BYTES
export const MASK_L = 0x7ffc0000 // 13 one-bits, used from CDC_NORMAL_BYTES

// The hot loop reads these unexported copies. V8 keeps an exported binding in a module cell that every
// read goes through: reading the exported names cost the loop about 20% here (2,600 against 3,150 MiB/s).
const MIN = CDC_MIN_BYTES
const NORMAL = CDC_NORMAL_BYTES
const MAX = CDC_MAX_BYTES
const S = MASK_S
const L = MASK_L
// The two-bytes-per-step loop (research 1.5) tests the first byte of each pair on the hash shifted left
// by one, against the mask shifted left by one. That is exact only because neither mask uses bit 31,
// which the shift drops. As int32: 0xFFFE0000 and 0xFFF80000.
const S_LS = S << 1
const L_LS = L << 1

const G: Int32Array = makeGear()
const G_LS: Int32Array = G.map((g) => g << 1)
/** GEAR[i] = the first 4 bytes of SHA-256("sfm-gear-" + i), unsigned little-endian (stored as int32). */
export const GEAR: Int32Array = G

/** The chunker as the addon takes it (src/native/sfm_chunker.c): the sizes, the masks, then GEAR. */
export const CUT_TABLE: Int32Array = Int32Array.from([MIN, NORMAL, MAX, S, L, ...G])

/**
 * Blocks with less than this left to cut are cut here: a trip to the thread pool costs tens of
 * microseconds, and 1 MiB about 400 of cutting.
 */
const OFF_THREAD_BYTES = 1 << 20

function makeGear(): Int32Array {
  const table = new Int32Array(256)
  for (let i = 0; i < 256; i++) {
    table[i] = createHash('sha256').update(`sfm-gear-${i}`, 'ascii').digest().readInt32LE(0)
  }
  return table
}

/**
 * The length of the chunk that starts at `start`, when `end` is either the end of the file or at least
 * `start + CDC_MAX_BYTES`. With fewer bytes and no end of file the answer is not final: Chunker waits.
 */
export function cutLength(buf: Uint8Array, start: number, end: number): number {
  if (!(start >= 0 && start <= end && end <= buf.length)) {
    throw new RangeError(`cutLength: bad range ${start}..${end} of ${buf.length} bytes`)
  }
  return cut(asBuffer(buf), start, end)
}

/** The chunk lengths of a whole buffer (one file), in order. Empty input has no chunks. */
export function chunkLengths(buf: Uint8Array): number[] {
  const b = asBuffer(buf)
  const lengths: number[] = []
  for (let pos = 0; pos < b.length; ) {
    const n = cut(b, pos, b.length)
    lengths.push(n)
    pos += n
  }
  return lengths
}

/** Receives each chunk's bytes as it is cut; the view is only valid during the call. */
export type ChunkSink = (chunk: Buffer) => void

// The tail of a stream never holds more than one chunk's worth of undecided bytes plus one chunk's worth
// of lookahead copied from the next block.
const TAIL_CAPACITY = 2 * CDC_MAX_BYTES
const NO_BYTES = Buffer.alloc(0)

/**
 * Streaming chunker: push blocks of any size and get back the lengths of the chunks they complete;
 * finish() cuts what is left. The result equals chunkLengths() of the concatenated blocks for every
 * split. It copies only the undecided tail (under CDC_MAX_BYTES) between pushes, so callers may reuse
 * their block buffers.
 */
export class Chunker {
  private tail: Buffer = NO_BYTES
  private tailLength = 0

  constructor(private readonly offThread: CutChunks | undefined = cutChunksOffThread) {}

  push(block: Uint8Array, sink?: ChunkSink): number[] {
    const out: number[] = []
    const input = asBuffer(block)
    const pos = this.useTail(input, out, sink)
    if (pos >= 0) this.cutRest(input, pos, out, sink)
    return out
  }

  /**
   * push(), with the bulk of a big block cut on the thread pool by the addon where it is built. The
   * block must not change, and no other push may start, until the promise settles; the sink runs on
   * the main thread as with push().
   */
  async pushOffThread(block: Uint8Array, sink?: ChunkSink): Promise<number[]> {
    const out: number[] = []
    const emit = (chunk: Buffer): void => {
      out.push(chunk.length)
      sink?.(chunk)
    }
    for (const chunk of await this.cutOffThread(block, emit)) emit(chunk)
    return out
  }

  /**
   * pushOffThread() in two steps, so that the caller can consume one block's chunks while the next
   * block is cut. The chunks that start in the bytes kept from the last push go to `sink` at once, as
   * views of a buffer the next push reuses. The promise brings the block's own chunks, which come
   * after those, as views of `block`.
   */
  async cutOffThread(block: Uint8Array, sink: ChunkSink): Promise<Buffer[]> {
    const input = asBuffer(block)
    const lengths: number[] = []
    let pos = this.useTail(input, lengths, sink)
    if (pos < 0) return []
    const views: Buffer[] = []
    if (this.offThread !== undefined && input.length - pos >= OFF_THREAD_BYTES) {
      for (const n of await this.offThread(input, pos, input.length, false, CUT_TABLE)) {
        views.push(input.subarray(pos, pos + n))
        pos += n
      }
    }
    this.cutRest(input, pos, lengths, (chunk) => void views.push(chunk))
    return views
  }

  /** Cuts the rest as the end of the file and makes the chunker ready for another stream. */
  finish(sink?: ChunkSink): number[] {
    const out: number[] = []
    for (let p = 0; p < this.tailLength; ) {
      p += this.emit(this.tail, p, this.tailLength, out, sink)
    }
    this.tailLength = 0
    return out
  }

  /**
   * Cuts the chunks that start in the tail, with up to CDC_MAX_BYTES of `input` appended as lookahead.
   * Returns where the next chunk starts in `input`, or -1 when all of it went into the tail.
   */
  private useTail(input: Buffer, out: number[], sink: ChunkSink | undefined): number {
    if (this.tailLength === 0) return 0
    const old = this.tailLength
    const take = Math.min(input.length, TAIL_CAPACITY - old)
    this.reserve(old + take)
    input.copy(this.tail, old, 0, take)
    const filled = old + take
    let p = 0
    while (p < old && filled - p >= CDC_MAX_BYTES) {
      p += this.emit(this.tail, p, p + CDC_MAX_BYTES, out, sink)
    }
    if (p < old) {
      // Not enough bytes to decide, which means the whole block went into the tail.
      if (p > 0) this.tail.copyWithin(0, p, filled)
      this.tailLength = filled - p
      return -1
    }
    this.tailLength = 0
    return p - old
  }

  /** Cuts every chunk of `input` from `pos` that has CDC_MAX_BYTES after its start; keeps the rest. */
  private cutRest(input: Buffer, pos: number, out: number[], sink: ChunkSink | undefined): void {
    const end = input.length
    while (end - pos >= CDC_MAX_BYTES) {
      pos += this.emit(input, pos, pos + CDC_MAX_BYTES, out, sink)
    }
    this.reserve(end - pos)
    input.copy(this.tail, 0, pos, end)
    this.tailLength = end - pos
  }

  private emit(buf: Buffer, start: number, end: number, out: number[], sink: ChunkSink | undefined): number {
    const n = cut(buf, start, end)
    out.push(n)
    if (sink !== undefined) sink(buf.subarray(start, start + n))
    return n
  }

  // Grows the tail geometrically, so a small file costs a small tail and 1-byte pushes stay linear.
  private reserve(bytes: number): void {
    if (bytes <= this.tail.length) return
    const next = Buffer.allocUnsafe(Math.min(TAIL_CAPACITY, Math.max(bytes, 2 * this.tail.length, 4_096)))
    this.tail.copy(next, 0, 0, this.tailLength)
    this.tail = next
  }
}

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
}

/*
 * The hot loop. Its one caller shape (Buffer, int, int) and module-level constants keep it monomorphic
 * (research 6.7). It rolls two bytes per step (research 1.5): with h the hash before bytes b0 b1,
 *   h = (h << 2) + G_LS[b0]   is the one-byte hash after b0, shifted left by one: test it against mask << 1;
 *   h = h + G[b1]             is the one-byte hash after b1: test it against the mask.
 * Each loop body is unrolled to four steps (8 bytes), then finishes pair by pair: measured here, 8 bytes
 * per iteration ran about 25% faster than 2 (3,100 against 2,450 MiB/s), the loop overhead being a large
 * part of so short a body. A lone last byte is never tested: the chunk ends after it whether it matches
 * or not. MIN and NORMAL are multiples of 8, so no step straddles the switch of masks.
 */
function cut(buf: Buffer, start: number, end: number): number {
  const remaining = end - start
  if (remaining <= MIN) return remaining
  const limit = start + (remaining < MAX ? remaining : MAX)
  const normal = start + (remaining < NORMAL ? remaining : NORMAL)
  let h = 0
  let i = start + MIN // cut-point skipping: the hash starts at 0 here
  for (const stop = normal - 7; i < stop; i += 8) {
    h = ((h << 2) + G_LS[buf[i]!]!) | 0
    if ((h & S_LS) === 0) return i + 1 - start
    h = (h + G[buf[i + 1]!]!) | 0
    if ((h & S) === 0) return i + 2 - start
    h = ((h << 2) + G_LS[buf[i + 2]!]!) | 0
    if ((h & S_LS) === 0) return i + 3 - start
    h = (h + G[buf[i + 3]!]!) | 0
    if ((h & S) === 0) return i + 4 - start
    h = ((h << 2) + G_LS[buf[i + 4]!]!) | 0
    if ((h & S_LS) === 0) return i + 5 - start
    h = (h + G[buf[i + 5]!]!) | 0
    if ((h & S) === 0) return i + 6 - start
    h = ((h << 2) + G_LS[buf[i + 6]!]!) | 0
    if ((h & S_LS) === 0) return i + 7 - start
    h = (h + G[buf[i + 7]!]!) | 0
    if ((h & S) === 0) return i + 8 - start
  }
  for (const stop = normal - 1; i < stop; i += 2) {
    h = ((h << 2) + G_LS[buf[i]!]!) | 0
    if ((h & S_LS) === 0) return i + 1 - start
    h = (h + G[buf[i + 1]!]!) | 0
    if ((h & S) === 0) return i + 2 - start
  }
  for (const stop = limit - 7; i < stop; i += 8) {
    h = ((h << 2) + G_LS[buf[i]!]!) | 0
    if ((h & L_LS) === 0) return i + 1 - start
    h = (h + G[buf[i + 1]!]!) | 0
    if ((h & L) === 0) return i + 2 - start
    h = ((h << 2) + G_LS[buf[i + 2]!]!) | 0
    if ((h & L_LS) === 0) return i + 3 - start
    h = (h + G[buf[i + 3]!]!) | 0
    if ((h & L) === 0) return i + 4 - start
    h = ((h << 2) + G_LS[buf[i + 4]!]!) | 0
    if ((h & L_LS) === 0) return i + 5 - start
    h = (h + G[buf[i + 5]!]!) | 0
    if ((h & L) === 0) return i + 6 - start
    h = ((h << 2) + G_LS[buf[i + 6]!]!) | 0
    if ((h & L_LS) === 0) return i + 7 - start
    h = (h + G[buf[i + 7]!]!) | 0
    if ((h & L) === 0) return i + 8 - start
  }
  for (const stop = limit - 1; i < stop; i += 2) {
    h = ((h << 2) + G_LS[buf[i]!]!) | 0
    if ((h & L_LS) === 0) return i + 1 - start
    h = (h + G[buf[i + 1]!]!) | 0
    if ((h & L) === 0) return i + 2 - start
  }
  return limit - start
}
