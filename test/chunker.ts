import t from 'tap'
import { createHash } from 'node:crypto'
import { basename } from 'node:path'
import {
  CDC_MAX_BYTES,
  CDC_MIN_BYTES,
  CDC_NORMAL_BYTES,
  CUT_TABLE,
  Chunker,
  GEAR,
  MASK_L,
  MASK_S,
  chunkLengths,
  cutLength,
} from '../src/chunker.js'
import { hash128, toHex } from '../src/hash.js'
import { cutChunksOffThread } from '../src/native/chunker-addon.js'
import { listVectors, readVector } from './helpers/vectors.js'

// The generators of spec/README-chunker.md.
function counterBytes(length: number): Buffer {
  const out = Buffer.alloc(Math.ceil(length / 16) * 16)
  const counter = Buffer.alloc(8)
  for (let k = 0; 16 * k < length; k++) {
    counter.writeBigUInt64BE(BigInt(k))
    hash128(counter).copy(out, 16 * k)
  }
  return out.subarray(0, length)
}

function generate(input: { generator: string; length: number }): Buffer {
  if (input.generator === 'zeros') return Buffer.alloc(input.length)
  if (input.generator === 'xxh128-counter') return counterBytes(input.length)
  throw new Error(`unknown generator ${input.generator}`)
}

// PROTOCOL.md 5.4 written out as plainly as possible: one byte per step, its own Gear table, unsigned
// arithmetic. It is the oracle for the two-bytes-per-step loop of src/chunker.ts.
const REF_GEAR = Array.from({ length: 256 }, (_, i) =>
  createHash('sha256').update(`sfm-gear-${i}`).digest().readUInt32LE(0),
)

function refCut(buf: Uint8Array, s: number, n: number): number {
  const r = n - s
  if (r <= 16_384) return r
  let h = 0
  for (let i = 16_384; i < Math.min(r, 131_072); i++) {
    h = (h * 2 + REF_GEAR[buf[s + i]!]!) % 2 ** 32
    const mask = i < 24_576 ? 0x7fff0000 : 0x7ffc0000
    if ((h & mask) === 0) return i + 1
  }
  return Math.min(r, 131_072)
}

function refLengths(buf: Uint8Array): number[] {
  const out: number[] = []
  for (let s = 0; s < buf.length; s += out[out.length - 1]!) out.push(refCut(buf, s, buf.length))
  return out
}

// A seeded PRNG (mulberry32), so that a failure can be replayed.
function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = Math.imul(a ^ (a >>> 15), 1 | a)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 2 ** 32
  }
}

function streamLengths(buf: Buffer, nextBlock: () => number): number[] {
  const c = new Chunker()
  const out: number[] = []
  for (let p = 0; p < buf.length; ) {
    const n = Math.min(nextBlock(), buf.length - p)
    out.push(...c.push(buf.subarray(p, p + n)))
    p += n
  }
  out.push(...c.finish())
  return out
}

const random16 = counterBytes(16 << 20)

t.test('the parameters are those of PROTOCOL.md 5.4', async (t) => {
  t.equal(CDC_MIN_BYTES, 16_384)
  t.equal(CDC_NORMAL_BYTES, 24_576)
  t.equal(CDC_MAX_BYTES, 131_072)
  t.equal(MASK_S, 0x7fff0000)
  t.equal(MASK_L, 0x7ffc0000)
  t.same(Array.from(GEAR, (g) => g >>> 0), REF_GEAR)
  t.equal(GEAR[0]! >>> 0, 0xa1b46e5d, 'GEAR[0], as spec/README-chunker.md quotes it')
})

for (const file of listVectors('spec/chunker')) {
  t.test(`spec/chunker/${basename(file)} matches the chunker and the reference`, async (t) => {
    const v = readVector(file)
    const input = generate(v.input)
    t.equal(toHex(hash128(input)), v.input.xxh128, 'the generated input is the one the vector was made from')
    // From the vector to the spec: the expected chunks tile the input and follow the one-byte definition.
    let offset = 0
    for (const c of v.chunks) {
      t.equal(c.offset, offset)
      t.equal(c.id, toHex(hash128(input.subarray(c.offset, c.offset + c.length))))
      offset += c.length
    }
    t.equal(offset, input.length)
    t.same(refLengths(input), v.chunks.map((c: { length: number }) => c.length))
    // From the code to the vector: whole buffer and streaming.
    t.same(chunkLengths(input), v.chunks.map((c: { length: number }) => c.length))
    t.same(streamLengths(input, () => 65_536), v.chunks.map((c: { length: number }) => c.length))
  })
}

t.test('the two-bytes-per-step loop cuts where the one-byte reference does', async (t) => {
  t.same(chunkLengths(random16), refLengths(random16), '16 MiB of pseudo-random bytes')
  // Every parity and both masks: chunks that end at odd and even offsets, before and after NORMAL_SIZE,
  // and inputs whose end falls on every residue mod 8 (the unrolled loop's tail).
  const lengths = chunkLengths(random16)
  t.ok(lengths.some((n) => n % 2 === 1 && n < CDC_NORMAL_BYTES), 'an odd cut below NORMAL_SIZE')
  t.ok(lengths.some((n) => n % 2 === 0 && n < CDC_NORMAL_BYTES), 'an even cut below NORMAL_SIZE')
  t.ok(lengths.some((n) => n % 2 === 1 && n > CDC_NORMAL_BYTES), 'an odd cut above NORMAL_SIZE')
  t.ok(lengths.some((n) => n % 2 === 0 && n > CDC_NORMAL_BYTES), 'an even cut above NORMAL_SIZE')
  const rand = prng(1)
  let mismatches = 0
  for (let k = 0; k < 2_000; k++) {
    const start = Math.floor(rand() * 1_000_000)
    const end = start + Math.floor(rand() * (CDC_MAX_BYTES + 100))
    if (cutLength(random16, start, end) !== refCut(random16, start, end)) mismatches++
  }
  t.equal(mismatches, 0, 'cutLength at 2,000 random (start, end) pairs')
  // Ends that fall just after a cut, so that the cut is found in the last few bytes the loop sees.
  for (let i = 0, start = 0; i < 40; start += lengths[i++]!) {
    for (let k = 0; k <= 9; k++) {
      const end = start + lengths[i]! + k
      if (cutLength(random16, start, end) !== refCut(random16, start, end)) mismatches++
    }
  }
  t.equal(mismatches, 0, 'cutLength with the end 0 to 9 bytes after a cut')
  // Low-entropy input: text, where the rolling hash sees long repeats.
  const text = Buffer.from('the quick brown fox jumps over the lazy dog. '.repeat(60_000).replace(/o/g, () => (rand() < 0.5 ? 'o' : '0')))
  t.same(chunkLengths(text), refLengths(text), 'English-like text')
})

t.test('chunks are contiguous and cover every byte exactly once', async (t) => {
  const sizes = [0, 1, CDC_MIN_BYTES - 1, CDC_MIN_BYTES, CDC_MIN_BYTES + 1, CDC_MIN_BYTES + 2, CDC_NORMAL_BYTES + 1]
  sizes.push(CDC_MAX_BYTES - 1, CDC_MAX_BYTES, CDC_MAX_BYTES + 1, 1_234_567, 5 << 20)
  for (const size of sizes) {
    const lengths = chunkLengths(random16.subarray(0, size))
    t.equal(lengths.reduce((a, b) => a + b, 0), size, `${size} bytes: the lengths add up`)
    t.ok(lengths.every((n) => n >= 1), `${size} bytes: no empty chunk`)
    if (size === 0) t.same(lengths, [], 'the empty input has no chunks')
  }
})

t.test('every chunk but the last is between MIN_SIZE and MAX_SIZE bytes', async (t) => {
  const lengths = chunkLengths(random16)
  const last = lengths.pop()!
  t.ok(lengths.every((n) => n >= CDC_MIN_BYTES && n <= CDC_MAX_BYTES))
  t.ok(last >= 1 && last <= CDC_MAX_BYTES)
  const avg = random16.length / (lengths.length + 1)
  // PROTOCOL.md 5.4: "about 29 KiB".
  t.ok(avg > 27 * 1024 && avg < 32 * 1024, `average chunk ${(avg / 1024).toFixed(1)} KiB`)
})

t.test('all-zero input is cut at MAX_SIZE', async (t) => {
  t.same(chunkLengths(Buffer.alloc(4 * CDC_MAX_BYTES + 1000)), [...Array(4).fill(CDC_MAX_BYTES), 1000])
  t.same(chunkLengths(new Uint8Array(CDC_MAX_BYTES + 1)), [CDC_MAX_BYTES, 1], 'a plain Uint8Array too')
})

t.test('streaming gives the same chunks as the whole buffer, for any split', async (t) => {
  const input = random16.subarray(0, 3_000_017)
  const whole = chunkLengths(input)
  for (const seed of [1, 2, 3]) {
    const rand = prng(seed)
    t.same(streamLengths(input, () => 1 + Math.floor(rand() * 700_000)), whole, `blocks up to 700 KB, seed ${seed}`)
    t.same(streamLengths(input, () => 1 + Math.floor(rand() * 5_000)), whole, `blocks up to 5 KB, seed ${seed}`)
  }
  t.same(streamLengths(input, () => CDC_MAX_BYTES), whole, 'blocks of exactly MAX_SIZE')
  t.same(streamLengths(input, () => CDC_MAX_BYTES - 1), whole, 'blocks of MAX_SIZE - 1')
  t.same(streamLengths(input, () => 4 << 20), whole, 'one block')
  const small = random16.subarray(0, 600_001)
  t.same(streamLengths(small, () => 1), chunkLengths(small), '1-byte pushes')
})

t.test('a streaming chunker hands out each chunk\'s bytes, and is ready again after finish', async (t) => {
  const input = random16.subarray(0, 2_000_000)
  const c = new Chunker()
  const seen: Buffer[] = []
  const sink = (chunk: Buffer): void => void seen.push(Buffer.from(chunk)) // the view is reused: copy it
  const rand = prng(7)
  for (let round = 0; round < 2; round++) {
    seen.length = 0
    const lengths: number[] = []
    for (let p = 0; p < input.length; ) {
      const n = Math.min(1 + Math.floor(rand() * 400_000), input.length - p)
      // the caller's block buffer is reused, as digestFile does: the chunker must not keep a view of it
      const block = Buffer.from(input.subarray(p, p + n))
      lengths.push(...c.push(block, sink))
      block.fill(0xee)
      p += n
    }
    lengths.push(...c.finish(sink))
    t.same(lengths, chunkLengths(input), `round ${round}: lengths`)
    t.ok(Buffer.concat(seen).equals(input), `round ${round}: the bytes handed out are the input`)
    t.same(seen.map((b) => b.length), lengths, `round ${round}: one call per chunk`)
  }
  t.same(c.push(Buffer.alloc(0)), [])
  t.same(c.finish(), [], 'nothing pushed, nothing cut')
})

t.test('cutLength refuses a range outside the buffer', async (t) => {
  const buf = Buffer.alloc(10)
  t.throws(() => cutLength(buf, 0, 11), RangeError)
  t.throws(() => cutLength(buf, 5, 4), RangeError)
  t.throws(() => cutLength(buf, -1, 4), RangeError)
  t.equal(cutLength(buf, 3, 10), 7)
})

// The addon's cutter (src/native/sfm_chunker.c), which pushOffThread hands the bulk of big blocks to.
// `npm install` builds it; SFM_NO_CHUNKER_ADDON=1 runs sfm without it.
t.ok(cutChunksOffThread !== undefined || process.env.SFM_NO_CHUNKER_ADDON === '1', 'the chunker addon loads')

t.test('the addon cuts where the one-byte reference does', { skip: cutChunksOffThread ? false : 'addon not built' }, async (t) => {
  const cutAddon = cutChunksOffThread!
  const text = Buffer.from('sfm mirrors a folder; '.repeat(200_000))
  for (const [name, input] of [['16 MiB of pseudo-random bytes', random16], ['zeros', Buffer.alloc(3 << 20)], ['text', text]] as const) {
    const lengths = Array.from(await cutAddon(input, 0, input.length, true, CUT_TABLE))
    t.same(lengths, refLengths(input), name)
  }
  // Without `final`, it stops where fewer than MAX_SIZE bytes remain: those chunks are not decided yet.
  const rand = prng(11)
  let mismatches = 0
  for (let k = 0; k < 300; k++) {
    const start = Math.floor(rand() * 1_000_000)
    const end = start + Math.floor(rand() * 3 * CDC_MAX_BYTES)
    const expected: number[] = []
    for (let s = start; end - s >= CDC_MAX_BYTES; s += expected[expected.length - 1]!) expected.push(refCut(random16, s, end))
    if (JSON.stringify(Array.from(await cutAddon(random16, start, end, false, CUT_TABLE))) !== JSON.stringify(expected)) mismatches++
  }
  t.equal(mismatches, 0, '300 random (start, end) ranges, not final')
  t.same(Array.from(await cutAddon(random16, 5, 5, true, CUT_TABLE)), [], 'an empty range')
  t.same(Array.from(await cutAddon(random16.subarray(100, 200), 0, 100, true, CUT_TABLE)), [100], 'a view: offsets are within it')
})

t.test('the addon refuses bad arguments with an error, not a crash', { skip: cutChunksOffThread ? false : 'addon not built' }, async (t) => {
  const cutAddon = cutChunksOffThread as unknown as (...args: unknown[]) => Promise<Uint32Array>
  const buf = Buffer.alloc(1000)
  t.throws(() => cutAddon(buf, 0, 1001, true, CUT_TABLE), RangeError, 'end past the buffer')
  t.throws(() => cutAddon(buf, 10, 5, true, CUT_TABLE), RangeError, 'start past end')
  t.throws(() => cutAddon(buf, 0.5, 5, true, CUT_TABLE), RangeError, 'a fractional offset')
  t.throws(() => cutAddon('bytes', 0, 5, true, CUT_TABLE), TypeError, 'a string')
  t.throws(() => cutAddon(new Uint16Array(8), 0, 5, true, CUT_TABLE), TypeError, 'another typed array')
  t.throws(() => cutAddon(buf, 0, 5, 1, CUT_TABLE), TypeError, 'final not a boolean')
  t.throws(() => cutAddon(buf, 0, 5, true, new Int32Array(260)), TypeError, 'a short table')
  const zeroMin = Int32Array.from(CUT_TABLE)
  zeroMin[0] = 0
  t.throws(() => cutAddon(buf, 0, 5, true, zeroMin), RangeError, 'MIN_SIZE 0')
  t.throws(() => cutAddon(buf, 0, 5), TypeError, 'missing arguments')
})

t.test('pushOffThread gives the chunks and bytes of push, with the addon and without', async (t) => {
  const input = random16.subarray(0, 9_000_011)
  const whole = chunkLengths(input)
  for (const [name, offThread] of [['addon', cutChunksOffThread], ['JavaScript', undefined]] as const) {
    if (name === 'addon' && !offThread) continue
    const rand = prng(5)
    const c = new Chunker(offThread)
    const seen: Buffer[] = []
    const lengths: number[] = []
    // blocks below and above the size that goes to the addon, reused as digestFile reuses them
    for (let p = 0; p < input.length; ) {
      const n = Math.min(rand() < 0.5 ? 1 + Math.floor(rand() * 300_000) : (1 << 20) + Math.floor(rand() * (3 << 20)), input.length - p)
      const block = Buffer.from(input.subarray(p, p + n))
      lengths.push(...(await c.pushOffThread(block, (chunk) => void seen.push(Buffer.from(chunk)))))
      block.fill(0xee)
      p += n
    }
    lengths.push(...c.finish((chunk) => void seen.push(Buffer.from(chunk))))
    t.same(lengths, whole, `${name}: lengths`)
    t.ok(Buffer.concat(seen).equals(input), `${name}: the bytes handed out are the input`)
  }
})
