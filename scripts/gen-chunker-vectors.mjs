// Writes spec/chunker/*.json from PROTOCOL.md 5.4 alone: a plain one-byte-per-step implementation of the
// chunker written from the spec's pseudo-code, independent of src/chunker.ts (whose two-byte loop the
// tests then check against these files). Review its output as a change to the specification.
//   node scripts/gen-chunker-vectors.mjs
import { createHash } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import xxhash from 'xxhash-addon'

const { XXHash128 } = xxhash
const MIN = 16_384
const NORMAL = 24_576
const MAX = 131_072
const MASK_S = 0x7fff0000
const MASK_L = 0x7ffc0000
const GEAR = Array.from({ length: 256 }, (_, i) => createHash('sha256').update(`sfm-gear-${i}`, 'ascii').digest().readUInt32LE(0))

const hex = (b) => Buffer.from(XXHash128.hash(b)).toString('hex')

/** PROTOCOL.md 5.4, line by line. */
function chunkLength(data, s) {
  const r = data.length - s
  if (r <= MIN) return r
  let h = 0
  for (let i = MIN; i <= Math.min(r, MAX) - 1; i++) {
    h = ((h << 1) + GEAR[data[s + i]]) >>> 0
    const mask = i < NORMAL ? MASK_S : MASK_L
    if ((h & mask) >>> 0 === 0) return i + 1
  }
  return Math.min(r, MAX)
}

/** The "xxh128-counter" recipe: XXH3-128 of each u64 big-endian counter 0, 1, 2, ..., cut to n bytes. */
function counterBytes(n) {
  const out = Buffer.alloc(Math.ceil(n / 16) * 16)
  const ctr = Buffer.alloc(8)
  for (let k = 0; k * 16 < n; k++) {
    ctr.writeBigUInt64BE(BigInt(k))
    Buffer.from(XXHash128.hash(ctr)).copy(out, k * 16)
  }
  return out.subarray(0, n)
}

const params = { min: MIN, normal: NORMAL, max: MAX, maskS: '0x7fff0000', maskL: '0x7ffc0000' }

function write(name, description, generator, length) {
  const input = generator === 'zeros' ? Buffer.alloc(length) : counterBytes(length)
  const chunks = []
  for (let off = 0; off < input.length; ) {
    const len = chunkLength(input, off)
    chunks.push({ offset: off, length: len, id: hex(input.subarray(off, off + len)) })
    off += len
  }
  const v = { description, rule: '5.4', input: { generator, length, xxh128: hex(input) }, params, chunks }
  const text = JSON.stringify(v, null, 2).replace(/\{\n\s+([^{}[\]]*?)\n\s+\}/g, (_m, body) => '{ ' + body.replace(/,\n\s+/g, ', ') + ' }')
  writeFileSync(new URL(`../spec/chunker/${name}.json`, import.meta.url), text + '\n')
  return chunks
}

const random = write('random-2mb', 'About 2 MB of pseudo-random bytes: cuts below and above NORMAL_SIZE, at odd and even lengths, and a last chunk ended by the end of the input.', 'xxh128-counter', 2_100_000)
write('small', 'A file below MIN_SIZE is one chunk, and its id is the hash of the whole file.', 'xxh128-counter', 1000)
write('min-exact', 'Exactly MIN_SIZE bytes: one chunk, nothing is hashed.', 'xxh128-counter', MIN)
write('min-plus-1', 'MIN_SIZE + 1 bytes: the one byte past MIN_SIZE is the last, so the file is one chunk whatever its hash.', 'xxh128-counter', MIN + 1)
const zeros = write('zeros-1mib', 'One MiB of zero bytes, cut at MAX_SIZE every time: over zeros the hash is GEAR[0] * (2^k - 1) after k bytes, which settles after 32 bytes at -GEAR[0] mod 2^32 = 0x5e4b91a3 (GEAR[0] = 0xa1b46e5d); that has bits in both masks, and none of the 32 values before it matches either.', 'zeros', 1 << 20)
console.log(`random-2mb: ${random.length} chunks (${random.map((c) => c.length).join(' ')})`)
console.log(`zeros-1mib: ${zeros.map((c) => c.length).join(' ')}`)
