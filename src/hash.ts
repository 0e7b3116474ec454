// Content hashes: XXH3-128 (algorithm 1 of PROTOCOL.md 5.1) and the compact forms sfm keeps them in.
import xxhash from 'xxhash-addon'
import { HASH_BYTES } from './protocol/constants.js'

export { HASH_BYTES }

// xxhash-addon is CommonJS and does no type checks of its own: anything but a Buffer or Uint8Array can
// abort the process, so every call goes through hash128's typed signature.
const { XXHash128 } = xxhash

/** XXH3-128 with seed 0, as the 16-byte canonical big-endian digest (what `xxh128sum` prints). */
export function hash128(data: Uint8Array): Buffer {
  return XXHash128.hash(data as Buffer)
}

/** The content id of the empty file: hash("") [M-TREE-2]. Shared: never write into it. */
export const EMPTY_CONTENT_ID: Buffer = hash128(Buffer.alloc(0))

/**
 * A Map or LRU key for a hash: its bytes as a latin1 string, one character per byte. It is the most
 * compact string key V8 offers (about 36 B against 52 B for hex, research 6.6) and converts back exactly.
 */
export function hashKey(hash: Uint8Array): string {
  return asBuffer(hash).toString('latin1')
}

export function hashFromKey(key: string): Buffer {
  return Buffer.from(key, 'latin1')
}

export function toHex(hash: Uint8Array): string {
  return asBuffer(hash).toString('hex')
}

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
}
