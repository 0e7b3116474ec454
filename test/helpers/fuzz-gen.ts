// Seeded, structure-aware generators for test/fuzz.ts: a PRNG, the spec/ corpus as bytes, mutators of
// those bytes, random frames with plausible headers, and random messages built with encodeMessage from
// hostile field values. Everything here is a pure function of the PRNG, so a seed and a case number
// reproduce a case exactly.
import { fileURLToPath } from 'node:url'
import { encodeMessage } from '../../src/protocol/codec.js'
import {
  HASH_BYTES,
  ID_BYTES,
  MAC_BYTES,
  MAGIC,
  MAX_CHUNK_BYTES,
  MAX_FRAME_BYTES,
  MAX_HANDSHAKE_FRAME_BYTES,
  MESSAGE_TYPE,
  NONCE_BYTES,
} from '../../src/protocol/constants.js'
import type { ListEntry, Message } from '../../src/protocol/messages.js'
import { EMPTY_CONTENT_ID, hash128, hashKey } from '../../src/hash.js'
import { contentIdOf } from '../../src/tree.js'
import { Rng, seedFromEnv } from './rng.js'
import { hexOf, listVectors, readVector } from './vectors.js'

export { Rng }

/** The seed of this run: SFM_FUZZ_SEED (decimal or 0x hex) if set, else a fresh random one. */
export const fuzzSeed = (env: NodeJS.ProcessEnv = process.env): number => seedFromEnv('SFM_FUZZ_SEED', env)

// ---------------------------------------------------------------------------------------------
// The corpus: every spec/valid and spec/invalid vector as bytes, and the c2s frames of spec/session.

export interface Seed {
  name: string
  bytes: Buffer
  /** The bytes stand where MAGIC is expected (invalid vectors with `magic: true`). */
  magic: boolean
  direction: 'c2s' | 's2c'
  valid: boolean
}

export function loadCorpus(): Seed[] {
  const dir = (sub: string) => fileURLToPath(new URL(`../../spec/${sub}`, import.meta.url))
  const out: Seed[] = []
  for (const sub of ['valid', 'invalid']) {
    for (const file of listVectors(dir(sub))) {
      const v = readVector(file)
      out.push({
        name: `${sub}/${file.slice(file.lastIndexOf('/') + 1)}`,
        bytes: hexOf(v.hex),
        magic: v.magic === true,
        direction: v.direction === 's2c' ? 's2c' : 'c2s',
        valid: sub === 'valid',
      })
    }
  }
  for (const file of listVectors(dir('session'))) {
    const v = readVector(file)
    v.frames.forEach((f: { direction: string; magic?: boolean; hex: string[] }, i: number) => {
      if (f.magic) return
      out.push({
        name: `session/${file.slice(file.lastIndexOf('/') + 1)}#${i}`,
        bytes: hexOf(f.hex),
        magic: false,
        direction: f.direction === 's2c' ? 's2c' : 'c2s',
        valid: true,
      })
    })
  }
  return out
}

// ---------------------------------------------------------------------------------------------
// Frames inside a byte stream.

export const REAL_TYPES: readonly number[] = Object.values(MESSAGE_TYPE)
/** Types a client may send once ready (they reach the server's request code, not only its state check). */
export const CLIENT_READY_TYPES: readonly number[] = [0x05, 0x06, 0x07, 0x10, 0x12, 0x20, 0x21, 0x22, 0x23, 0x30, 0x31, 0x32, 0x33, 0x34]

export interface FrameAt {
  /** Offset of the length field. */
  start: number
  /** The length field's value. */
  length: number
  type: number
  /** Whether all length bytes are present. */
  whole: boolean
}

/** Whether `buf` (from `from` on) is a sequence of whole frames, judged by their length fields alone. */
export function endsOnFrameBoundary(buf: Buffer, from = 0): boolean {
  let at = from
  while (at < buf.length) {
    if (buf.length - at < 4) return false
    const length = buf.readUInt32BE(at)
    if (length === 0) return true // the receiver stops here with an error
    at += 4 + length
  }
  return at === buf.length
}

/** The frames of `buf` from `from` on, by their length fields, until one runs past the end. */
export function framesIn(buf: Buffer, from = 0): FrameAt[] {
  const out: FrameAt[] = []
  let at = from
  while (at + 5 <= buf.length) {
    const length = buf.readUInt32BE(at)
    out.push({ start: at, length, type: buf[at + 4]!, whole: at + 4 + length <= buf.length })
    if (length === 0 || at + 4 + length > buf.length) break
    at += 4 + length
  }
  return out
}

// ---------------------------------------------------------------------------------------------
// Mutators. Each returns a new buffer; none changes its input.

const BOUNDARY_BYTES = [0x00, 0x01, 0x7f, 0x80, 0xff, 0xfe, 0x2f, 0x2e, 0x5c, 0xc0, 0xed, 0xef, 0xf4]
const BOUNDARY_U16 = [0, 1, 2, 7, 8, 9, 16, 255, 256, 1023, 1024, 1025, 4095, 4096, 4097, 0x7fff, 0x8000, 0xfffe, 0xffff]

function boundaryByte(rng: Rng): number {
  return rng.chance(0.7) ? rng.pick(BOUNDARY_BYTES) : rng.int(256)
}

/** An offset, biased towards the header (length, type) and the first fields of the body. */
function offsetIn(rng: Rng, buf: Buffer): number {
  if (buf.length === 0) return 0
  return rng.chance(0.4) ? rng.int(Math.min(buf.length, 16)) : rng.int(buf.length)
}

function flipBits(rng: Rng, buf: Buffer): Buffer {
  const out = Buffer.from(buf)
  if (out.length === 0) return out
  for (let n = rng.range(1, 4); n > 0; n--) out[offsetIn(rng, out)]! ^= 1 << rng.int(8)
  return out
}

function replaceBytes(rng: Rng, buf: Buffer): Buffer {
  const out = Buffer.from(buf)
  if (out.length === 0) return out
  for (let n = rng.range(1, 4); n > 0; n--) out[offsetIn(rng, out)] = boundaryByte(rng)
  return out
}

function truncate(rng: Rng, buf: Buffer): Buffer {
  if (buf.length === 0) return buf
  const cut = rng.chance(0.5) ? buf.length - rng.range(1, Math.min(buf.length, 20)) : rng.int(buf.length)
  return Buffer.from(buf.subarray(0, cut))
}

function extend(rng: Rng, buf: Buffer): Buffer {
  const n = rng.size(2_000) + 1
  const tail = rng.weighted<() => Buffer>([
    [3, () => rng.bytes(n)],
    [2, () => Buffer.alloc(n, boundaryByte(rng))],
    [1, () => (buf.length > 0 ? Buffer.from(buf.subarray(rng.int(buf.length))) : rng.bytes(n))],
  ])()
  return Buffer.concat([buf, tail])
}

/** Inserts or deletes bytes in the middle: every later field moves. */
function shift(rng: Rng, buf: Buffer): Buffer {
  const at = offsetIn(rng, buf)
  if (rng.chance(0.5) && buf.length > 0) {
    const n = rng.range(1, Math.min(8, buf.length - at || 1))
    return Buffer.concat([buf.subarray(0, at), buf.subarray(at + n)])
  }
  const ins = rng.chance(0.5) ? Buffer.alloc(rng.range(1, 8), boundaryByte(rng)) : rng.bytes(rng.range(1, 8))
  return Buffer.concat([buf.subarray(0, at), ins, buf.subarray(at)])
}

function pickFrame(rng: Rng, buf: Buffer): FrameAt | null {
  const frames = framesIn(buf, rng.chance(0.1) && buf.length >= 4 ? 4 : 0)
  return frames.length > 0 ? rng.pick(frames) : null
}

function rewriteLength(rng: Rng, buf: Buffer): Buffer {
  const f = pickFrame(rng, buf)
  const out = Buffer.from(buf.length >= 4 ? buf : Buffer.concat([buf, Buffer.alloc(4 - buf.length)]))
  const start = f ? f.start : 0
  const body = f ? f.length : out.length - 4
  const v = rng.pick([
    0,
    1,
    2,
    5,
    body,
    body + 1,
    Math.max(0, body - 1),
    body + rng.range(2, 64),
    MAX_HANDSHAKE_FRAME_BYTES,
    MAX_HANDSHAKE_FRAME_BYTES + 1,
    MAX_FRAME_BYTES - 1,
    MAX_FRAME_BYTES,
    MAX_FRAME_BYTES + 1,
    0x7fffffff,
    0x80000000,
    0xffffffff,
    rng.u32(),
  ])
  out.writeUInt32BE(v >>> 0, start)
  return out
}

/**
 * Offsets of the count and string-length fields of a frame's body, found by reading its layout (as
 * far as the bytes go). [offset into the whole buffer, width in bytes].
 */
export function countFields(buf: Buffer, f: FrameAt): [number, 1 | 2][] {
  const b = f.start + 5
  const end = Math.min(buf.length, f.start + 4 + f.length)
  const fields: [number, 1 | 2][] = []
  const u16At = (o: number) => (o + 2 <= end ? buf.readUInt16BE(o) : -1)
  const str = (o: number): number => {
    // a str field at o: record it, return the offset after it (or -1 when it runs out)
    if (o + 2 > end) return -1
    fields.push([o, 2])
    return o + 2 + u16At(o)
  }
  const T = MESSAGE_TYPE
  switch (f.type) {
    case T.HELLO: {
      const n = b + 36 < end ? buf[b + 36]! : -1
      if (n >= 0) fields.push([b + 36, 1])
      if (n >= 0) str(b + 37 + n)
      break
    }
    case T.ERROR:
      str(b + 6)
      break
    case T.HAVE_QUERY:
    case T.HAVE_REPLY:
    case T.REFS:
      if (b + 6 <= end) fields.push([b + 4, 2])
      break
    case T.LISTING: {
      if (b + 7 <= end) fields.push([b + 5, 2])
      // the first entry: kind, path str, mode, mtime, then size+id or target str
      const kind = b + 7 < end ? buf[b + 7] : -1
      const after = str(b + 8)
      if (after > 0 && kind === 3) str(after + 10)
      break
    }
    case T.COMMIT:
    case T.DELETE:
    case T.MKDIR:
    case T.SETATTR:
      str(b + 4)
      break
    case T.SYMLINK:
    case T.RENAME: {
      const after = str(b + 4)
      if (after > 0) str(after)
      break
    }
  }
  return fields.filter(([o, w]) => o + w <= buf.length)
}

function rewriteCount(rng: Rng, buf: Buffer): Buffer {
  const f = pickFrame(rng, buf)
  if (!f) return replaceBytes(rng, buf)
  const fields = countFields(buf, f)
  if (fields.length === 0) return rewriteLength(rng, buf)
  const [at, width] = rng.pick(fields)
  const out = Buffer.from(buf)
  if (width === 1) {
    out[at] = rng.pick([0, 1, 2, 8, 9, 0x7f, 0x80, 0xff, (out[at]! + 1) & 0xff, (out[at]! - 1) & 0xff])
  } else {
    const cur = out.readUInt16BE(at)
    const rest = f.start + 4 + f.length - (at + 2)
    const v = rng.pick([...BOUNDARY_U16, (cur + 1) & 0xffff, (cur - 1) & 0xffff, Math.max(0, Math.min(0xffff, rest)), rng.int(0x10000)])
    out.writeUInt16BE(v, at)
  }
  return out
}

/** A different real type in one frame's type byte: the body is read with the wrong layout. */
function retype(rng: Rng, buf: Buffer): Buffer {
  const f = pickFrame(rng, buf)
  if (!f) return replaceBytes(rng, buf)
  const out = Buffer.from(buf)
  out[f.start + 4] = rng.chance(0.85) ? rng.pick(REAL_TYPES) : rng.int(256)
  return out
}

function duplicate(rng: Rng, buf: Buffer): Buffer {
  const f = pickFrame(rng, buf)
  if (f && f.whole && rng.chance(0.7)) {
    const frame = buf.subarray(f.start, f.start + 4 + f.length)
    const copies = Array.from({ length: rng.range(1, 4) }, () => frame)
    const at = f.start + 4 + f.length
    return Buffer.concat([buf.subarray(0, at), ...copies, buf.subarray(at)])
  }
  return Buffer.concat(Array.from({ length: rng.range(2, 3) }, () => buf))
}

type Mutator = (rng: Rng, buf: Buffer) => Buffer

export const MUTATORS: readonly (readonly [number, string, Mutator])[] = [
  [3, 'flip', flipBits],
  [3, 'replace', replaceBytes],
  [2, 'truncate', truncate],
  [2, 'extend', extend],
  [2, 'shift', shift],
  [3, 'length', rewriteLength],
  [3, 'count', rewriteCount],
  [1, 'retype', retype],
  [1, 'duplicate', duplicate],
]

/** 1 to 3 stacked mutations of `buf`; `others` supplies material for splices. */
export function mutate(rng: Rng, buf: Buffer, others: () => Buffer): { bytes: Buffer; how: string[] } {
  const how: string[] = []
  let out = buf
  for (let n = rng.weighted([[6, 1], [3, 2], [1, 3]] as const); n > 0; n--) {
    if (rng.chance(0.08)) {
      // splice: the front of this one, the back of another; or the two whole, one after the other
      const other = others()
      out = rng.chance(0.5)
        ? Buffer.concat([out.subarray(0, rng.int(out.length + 1)), other.subarray(rng.int(other.length + 1))])
        : rng.chance(0.5)
          ? Buffer.concat([out, other])
          : Buffer.concat([other, out])
      how.push('splice')
      continue
    }
    const [, name, m] = rng.weighted(MUTATORS.map((x) => [x[0], x] as const))
    out = m(rng, out)
    how.push(name)
  }
  return { bytes: out, how }
}

// ---------------------------------------------------------------------------------------------
// Random frames: a plausible header (a real type, a length that matches) around random bytes.

export function randomFrame(rng: Rng): Buffer {
  const type = rng.chance(0.85) ? rng.pick(REAL_TYPES) : rng.int(256)
  const bodyLength = rng.weighted<() => number>([
    [3, () => rng.int(9)],
    [4, () => rng.int(65)],
    [2, () => rng.int(1_100)],
    [1, () => rng.int(70_000)],
  ])()
  const body = rng.chance(0.3) ? Buffer.alloc(bodyLength, boundaryByte(rng)) : rng.bytes(bodyLength)
  if (body.length >= 4 && rng.chance(0.5)) {
    // plausible leading fields: a small id, then a small count or string length
    body.writeUInt32BE(rng.pick([0, 1, 2, 3, 0xffffffff]) >>> 0, 0)
  }
  if (body.length >= 6 && rng.chance(0.5)) body.writeUInt16BE(Math.min(body.length - 6, rng.pick([0, 1, 2, body.length - 6, 4096]), 0xffff), 4)
  const header = Buffer.alloc(5)
  const length = rng.chance(0.85) ? 1 + bodyLength : rng.pick([0, bodyLength, bodyLength + 2, MAX_FRAME_BYTES + 1, 0xffffffff, rng.u32()])
  header.writeUInt32BE(length >>> 0, 0)
  header[4] = type
  return Buffer.concat([header, body])
}

export function randomFrames(rng: Rng): Buffer {
  return Buffer.concat(Array.from({ length: rng.weighted([[5, 1], [3, 2], [1, 4]] as const) }, () => randomFrame(rng)))
}

// ---------------------------------------------------------------------------------------------
// Structure-aware messages: encodeMessage over random field values. The encoder does not validate, so
// about half of these are invalid in some field the decoder must catch.

const NAMES = ['a', 'b', 'c', 'dir', 'file.txt', 'x y', '-rf', 'é', 'e\u0301', '\uFEFFbom', 'ü'.repeat(2)]
const HOSTILE_SEGMENTS = [
  '..',
  '.',
  '',
  '.sfm',
  '.SFM',
  '.sfm.',
  '.sfmx',
  '\0',
  'a\0b',
  '\\',
  '..\\..',
  'x'.repeat(255),
  'x'.repeat(256),
  'é'.repeat(127) + 'x',
  'é'.repeat(128),
  '\uD800',
  '\uDC00x',
  '\uFFFD',
  '😀'.repeat(64),
  '\n',
  '\u202e',
]

/**
 * A path of about `bytes` bytes: a short first segment, then long names, so that it nears
 * MAX_PATH_BYTES (and, below a server's root, PATH_MAX) without being deep.
 */
export function longPath(rng: Rng, bytes: number): string {
  let p = rng.pick(['a', 'b', 'p'])
  while (p.length < bytes) p += '/' + 'n'.repeat(Math.max(1, Math.min(rng.range(200, 255), bytes - p.length - 1)))
  return p
}

/** A path: mostly short segments from a few names (so requests collide), sometimes hostile. */
export function randomPath(rng: Rng): string {
  if (rng.chance(0.02)) return longPath(rng, rng.range(3_900, 4_100)) // around MAX_PATH_BYTES
  // deep trees are rare: listing them costs O(depth^2) bytes of paths
  if (rng.chance(0.001)) return 'p/'.repeat(rng.range(1_000, 2_100)) + 'q'
  const n = rng.weighted([[5, 1], [4, 2], [2, 3], [1, 6]] as const)
  const segs: string[] = []
  for (let i = 0; i < n; i++) segs.push(rng.chance(0.25) ? rng.pick(HOSTILE_SEGMENTS) : rng.pick(NAMES))
  let p = segs.join(rng.chance(0.05) ? '//' : '/')
  if (rng.chance(0.05)) p = '/' + p
  if (rng.chance(0.05)) p = p + '/'
  return p
}

function id32(rng: Rng): number {
  return rng.weighted<() => number>([
    [2, () => 0],
    [6, () => rng.range(1, 8)],
    [1, () => 0xffffffff],
    [3, () => rng.u32()],
  ])()
}

function mode(rng: Rng): number {
  return rng.pick([0, 0o644, 0o755, 0o600, 0o7777, 0o10000, 0o17777, 0xffff, rng.int(0x10000), rng.int(0o10000)])
}

const I64_MIN = -(2n ** 63n)
const I64_MAX = 2n ** 63n - 1n

function mtime(rng: Rng): bigint {
  return rng.pick([0n, -1n, 1n, I64_MIN, I64_MAX, 1_700_000_000_123_456_789n, -1_000_000_000n, 9_000_000_000_000_000_000n, BigInt(rng.u32()) * 1_000_000_007n])
}

function u64(rng: Rng): number {
  return rng.pick([0, 1, 11, 2 ** 32, 2 ** 53 - 1, rng.int(2 ** 53)])
}

function hash(rng: Rng): Buffer {
  return rng.chance(0.1) ? Buffer.alloc(HASH_BYTES) : rng.bytes(HASH_BYTES)
}

function text(rng: Rng, max: number): string {
  const n = rng.chance(0.1) ? max + rng.range(0, 2) : rng.size(max)
  return rng.chance(0.2) ? 'é'.repeat(Math.ceil(n / 2)) : 'm'.repeat(n)
}

function count(rng: Rng): number {
  return rng.pick([0, 1, 2, 3, 8, 9, 4096, 4097, rng.range(1, 40)])
}

function entry(rng: Rng): ListEntry {
  const common = { path: randomPath(rng), mode: mode(rng), mtimeNs: mtime(rng) }
  switch (rng.int(3)) {
    case 0:
      return { kind: 'file', ...common, size: u64(rng), contentId: hash(rng) }
    case 1:
      return { kind: 'dir', ...common }
    default:
      return { kind: 'symlink', ...common, target: rng.chance(0.1) ? '' : randomPath(rng) }
  }
}

const ALL_TAGS: readonly Message['type'][] = [
  'hello', 'welcome', 'auth', 'authOk', 'ping', 'pong', 'error', 'ok', 'haveQuery', 'haveReply', 'list',
  'listing', 'digestQuery', 'digestReply', 'chunk', 'refs', 'commit', 'abort', 'delete', 'mkdir', 'symlink',
  'rename', 'setattr',
]
/** What a client sends once ready: these reach the server's request code. */
export const CLIENT_TAGS: readonly Message['type'][] = [
  'ping', 'pong', 'error', 'haveQuery', 'list', 'chunk', 'refs', 'commit', 'abort', 'delete', 'mkdir', 'symlink', 'rename', 'setattr',
]

/** A random message of one of `tags` (default: any type), with hostile field values. */
export function randomMessage(rng: Rng, tags: readonly Message['type'][] = ALL_TAGS): Message {
  const type = rng.pick(tags)
  switch (type) {
    case 'hello':
      return {
        type,
        minVersion: rng.pick([0, 1, 2, 0xffff]),
        maxVersion: rng.pick([0, 1, 2, 0xffff]),
        clientId: rng.bytes(ID_BYTES),
        clientNonce: rng.bytes(NONCE_BYTES),
        algos: Array.from({ length: rng.pick([0, 1, 2, 8, 9]) }, () => rng.pick([0, 1, 2, 0xff])),
        clientName: text(rng, 255),
      }
    case 'welcome':
      return {
        type,
        version: rng.pick([0, 1, 2]),
        algo: rng.pick([0, 1, 2]),
        authRequired: rng.chance(0.5),
        serverNonce: rng.bytes(NONCE_BYTES),
        mirrorId: rng.bytes(ID_BYTES),
        maxOpenUploads: rng.pick([0, 1, 32, 0xffff]),
        maxInflight: rng.pick([0, 1, 4096, 0xffff]),
        keepaliveMs: rng.pick([0, 999, 1000, 15000, 0xffffffff]),
      }
    case 'auth':
    case 'authOk':
      return { type, mac: rng.bytes(MAC_BYTES) }
    case 'ping':
    case 'pong':
      return { type }
    case 'error':
      return { type, requestId: id32(rng), code: rng.pick([0, 1, 7, 17, 31, 32, 39, 40, 0xffff]), message: text(rng, 1024) }
    case 'ok':
    case 'list':
    case 'digestQuery':
      return { type, requestId: id32(rng) }
    case 'digestReply':
      return { type, requestId: id32(rng), digest: hash(rng) }
    case 'haveQuery':
      return { type, requestId: id32(rng), hashes: Array.from({ length: count(rng) }, () => hash(rng)) }
    case 'haveReply':
      return { type, requestId: id32(rng), have: Array.from({ length: count(rng) }, () => rng.chance(0.5)) }
    case 'listing': {
      const n = rng.pick([0, 0, 1, 2, 5])
      return { type, requestId: id32(rng), last: rng.chance(0.6), entries: Array.from({ length: n }, () => entry(rng)) }
    }
    case 'chunk': {
      const n = rng.weighted<() => number>([
        [1, () => 0],
        [8, () => rng.range(1, 2_000)],
        [1, () => rng.pick([MAX_CHUNK_BYTES, MAX_CHUNK_BYTES + 1])],
      ])()
      return { type, uploadId: id32(rng), hash: hash(rng), data: rng.bytes(n) }
    }
    case 'refs':
      return { type, uploadId: id32(rng), refs: Array.from({ length: count(rng) }, () => ({ hash: hash(rng), length: u64(rng) })) }
    case 'commit':
      return { type, uploadId: id32(rng), path: randomPath(rng), mode: mode(rng), mtimeNs: mtime(rng), size: u64(rng), contentId: hash(rng) }
    case 'abort':
      return { type, uploadId: id32(rng) }
    case 'delete':
      return { type, requestId: id32(rng), path: randomPath(rng) }
    case 'mkdir':
    case 'setattr':
      return { type, requestId: id32(rng), path: randomPath(rng), mode: mode(rng), mtimeNs: mtime(rng) }
    case 'symlink':
      return { type, requestId: id32(rng), path: randomPath(rng), target: rng.chance(0.1) ? rng.pick(['', 'a\0b']) : randomPath(rng), mtimeNs: mtime(rng) }
    case 'rename':
      return { type, requestId: id32(rng), from: randomPath(rng), to: randomPath(rng) }
  }
}

export function frameOf(msg: Message): Buffer {
  return Buffer.concat(encodeMessage(msg))
}

export function randomMessages(rng: Rng, tags?: readonly Message['type'][]): Buffer {
  return Buffer.concat(Array.from({ length: rng.weighted([[5, 1], [3, 2], [1, 5]] as const) }, () => frameOf(randomMessage(rng, tags))))
}

/** Cuts `bytes` into 1 to 8 pieces at random offsets (sometimes one byte at a time for short input). */
export function randomSplit(rng: Rng, bytes: Buffer): Buffer[] {
  if (bytes.length <= 64 && rng.chance(0.1)) return Array.from(bytes, (_, i) => bytes.subarray(i, i + 1))
  const cuts = new Set<number>()
  for (let n = rng.range(0, 7); n > 0; n--) cuts.add(rng.int(bytes.length + 1))
  const sorted = [...cuts].sort((a, b) => a - b)
  const out: Buffer[] = []
  let prev = 0
  for (const c of [...sorted, bytes.length]) {
    out.push(bytes.subarray(prev, c))
    prev = c
  }
  return out
}


// ---------------------------------------------------------------------------------------------
// The valid-session space: well-formed requests in a small namespace (so they collide: replace,
// rename over, delete below, write through a symlink), uploads whose chunks and content ids are
// right (mostly), REFS to earlier chunks and to content committed before. The server has to carry
// them out (or refuse them with a request error) without ever leaving its root.

interface Leaf {
  id: Buffer
  length: number
}

interface OpenUpload {
  id: number
  leaves: Leaf[]
  /** Chunks sent in this upload, by hash key: a REF may name them. */
  own: Map<string, number>
}

export interface SessionGen {
  nextId: number
  /** Uploads opened by earlier cases on this connection and not yet committed or aborted. */
  open: OpenUpload[]
  /** Content committed before (on any connection): whole files and single chunks, for REFS. */
  known: { id: Buffer; length: number; leaves: Leaf[] }[]
  /** Symlink targets that point outside the root (the sentinel directory among them). */
  outsideTargets: string[]
}

export function newSessionGen(outsideTargets: string[], known: SessionGen['known'] = []): SessionGen {
  return { nextId: 1, open: [], known, outsideTargets }
}

const NS = ['a', 'b', 'c', 'l', 'd']

export function validPath(rng: Rng): string {
  if (rng.chance(0.005)) return longPath(rng, rng.range(3_900, 4_095))
  const n = rng.weighted([[4, 1], [4, 2], [2, 3], [1, 4]] as const)
  const segs: string[] = []
  for (let i = 0; i < n; i++) {
    segs.push(
      rng.weighted<() => string>([
        [20, () => rng.pick(NS)],
        [1, () => 'n'.repeat(255)],
        [1, () => rng.pick(['.sfmx', '..a', 'a..', '.SFM2', '\\..', 'é', 'e\u0301', '\uFEFF', ' ', '-'])],
      ])(),
    )
  }
  // `.sfm` is fine below the first segment
  if (rng.chance(0.02) && segs.length > 1) segs[1] = '.sfm'
  return segs.join('/')
}

function validMode(rng: Rng): number {
  return rng.pick([0o644, 0o755, 0o600, 0o777, 0o700, 0o4755, 0o1777, 0, 0o7777, 0o444])
}

function validMtime(rng: Rng): bigint {
  return rng.weighted<() => bigint>([
    [10, () => 1_700_000_000_000_000_000n + BigInt(rng.u32()) * 1_000n + BigInt(rng.int(1000))],
    [1, () => rng.pick([0n, -1n, -1_500_000_000_123_456_789n, I64_MIN, I64_MAX, 4_102_444_800_000_000_000n, 1n])],
  ])()
}

function dataOf(rng: Rng): Buffer {
  const n = rng.weighted<() => number>([
    [6, () => rng.range(1, 300)],
    [3, () => rng.range(300, 20_000)],
    [1, () => rng.range(20_000, 300_000)],
    [0.05, () => MAX_CHUNK_BYTES],
  ])()
  // compressible or not, and with repeats, so chunks recur across uploads
  return rng.chance(0.3) ? Buffer.alloc(n, rng.pick([0x61, 0x00, 0xff])) : rng.bytes(n)
}

/** CHUNKs (and REFS to what this upload or the mirror already has) for `data`, into `up`. */
function sendData(rng: Rng, g: SessionGen, up: OpenUpload, data: Buffer, out: Message[]): void {
  let at = 0
  while (at < data.length) {
    const left = data.length - at
    const n = Math.min(left, rng.chance(0.5) ? left : rng.range(1, Math.min(left, MAX_CHUNK_BYTES)))
    const piece = data.subarray(at, at + n)
    const id = hash128(piece)
    const key = hashKey(id)
    if (up.own.get(key) === n && rng.chance(0.8)) {
      out.push({ type: 'refs', uploadId: up.id, refs: [{ hash: id, length: n }] })
    } else {
      const wrong = rng.chance(0.03)
      out.push({ type: 'chunk', uploadId: up.id, hash: wrong ? rng.bytes(HASH_BYTES) : id, data: piece })
      up.own.set(key, n)
    }
    up.leaves.push({ id, length: n })
    at += n
  }
  // sometimes append content the server may have from earlier commits
  if (g.known.length > 0 && rng.chance(0.3)) {
    const k = rng.pick(g.known)
    out.push({ type: 'refs', uploadId: up.id, refs: [{ hash: k.id, length: k.length }] })
    up.leaves.push(...k.leaves)
  }
}

function commitOf(rng: Rng, g: SessionGen, up: OpenUpload): Message {
  const ids = Buffer.concat(up.leaves.map((l) => l.id))
  const lengths = up.leaves.map((l) => l.length)
  const size = lengths.reduce((a, b) => a + b, 0)
  const contentId = up.leaves.length === 0 ? EMPTY_CONTENT_ID : contentIdOf(ids, lengths)
  if (up.leaves.length > 0 && size > 0) {
    g.known.push({ id: contentId, length: size, leaves: up.leaves.slice() })
    const leaf = rng.pick(up.leaves)
    g.known.push({ id: leaf.id, length: leaf.length, leaves: [leaf] })
    if (g.known.length > 200) g.known.splice(0, g.known.length - 200)
  }
  return {
    type: 'commit',
    uploadId: up.id,
    path: validPath(rng),
    mode: validMode(rng),
    mtimeNs: validMtime(rng),
    size: rng.chance(0.03) ? size + 1 : size,
    contentId: rng.chance(0.03) ? rng.bytes(HASH_BYTES) : contentId,
  }
}

/**
 * One case of the valid-session space: 1 to 20 well-formed requests with fresh ids. `g` carries the
 * open uploads and the next id from case to case on one connection.
 */
export function validSession(rng: Rng, g: SessionGen): Buffer {
  const out: Message[] = []
  const id = () => g.nextId++
  for (let n = rng.range(1, 20); n > 0; n--) {
    const op = rng.weighted<string>([
      [30, 'upload'],
      [4, 'start'],
      [6, 'continue'],
      [2, 'abort'],
      [5, 'finish'],
      [10, 'mkdir'],
      [8, 'delete'],
      [9, 'rename'],
      [9, 'symlink'],
      [7, 'setattr'],
      [2, 'list'],
      [2, 'have'],
      [1, 'ping'],
    ])
    switch (op) {
      case 'upload': {
        const up: OpenUpload = { id: id(), leaves: [], own: new Map() }
        if (rng.chance(0.9)) sendData(rng, g, up, dataOf(rng), out)
        out.push(commitOf(rng, g, up))
        break
      }
      case 'start':
        if (g.open.length < 8) {
          const up: OpenUpload = { id: id(), leaves: [], own: new Map() }
          sendData(rng, g, up, dataOf(rng), out)
          g.open.push(up)
        }
        break
      case 'continue':
        if (g.open.length > 0) sendData(rng, g, rng.pick(g.open), dataOf(rng), out)
        break
      case 'abort':
      case 'finish':
        if (g.open.length > 0) {
          const up = g.open.splice(rng.int(g.open.length), 1)[0]!
          out.push(op === 'abort' ? { type: 'abort', uploadId: up.id } : commitOf(rng, g, up))
        }
        break
      case 'mkdir':
        out.push({ type: 'mkdir', requestId: id(), path: validPath(rng), mode: validMode(rng), mtimeNs: validMtime(rng) })
        break
      case 'delete':
        out.push({ type: 'delete', requestId: id(), path: validPath(rng) })
        break
      case 'rename': {
        const from = validPath(rng)
        const to = rng.chance(0.1) ? `${from}/${rng.pick(NS)}` : rng.chance(0.1) && from.includes('/') ? from.slice(0, from.lastIndexOf('/')) : validPath(rng)
        out.push({ type: 'rename', requestId: id(), from, to })
        break
      }
      case 'symlink': {
        const target = rng.weighted<() => string>([
          [3, () => rng.pick(g.outsideTargets)],
          [2, () => validPath(rng)],
          [1, () => rng.pick(['..', '.', '/', '../..', '/proc/self/cwd', 'a/../../..', '.sfm', '.sfm/tmp', 'x'.repeat(4095)])],
        ])()
        out.push({ type: 'symlink', requestId: id(), path: validPath(rng), target, mtimeNs: validMtime(rng) })
        break
      }
      case 'setattr':
        out.push({ type: 'setattr', requestId: id(), path: validPath(rng), mode: validMode(rng), mtimeNs: validMtime(rng) })
        break
      case 'list':
        out.push({ type: 'list', requestId: id() })
        break
      case 'have': {
        const hashes = Array.from({ length: rng.range(1, 40) }, () => (g.known.length > 0 && rng.chance(0.7) ? rng.pick(g.known).id : rng.bytes(HASH_BYTES)))
        out.push({ type: 'haveQuery', requestId: id(), hashes })
        break
      }
      case 'ping':
        out.push({ type: 'ping' })
        break
    }
  }
  // interleave: uploads may be spread over the other requests, but each keeps its own order
  return Buffer.concat(out.map(frameOf))
}
