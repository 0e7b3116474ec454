// Deterministic data sets: every byte, name and size comes from a seed.
// Bytes are an AES-128-CTR keystream (key = first 16 bytes of SHA-256 of the seed text, IV 0):
// incompressible, identical in every run, and generated at over 1 GiB/s. Sizes come from a seeded
// 32-bit PRNG (mulberry32).
import { createCipheriv, createHash } from 'node:crypto'
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, utimesSync, writeFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { KiB, MiB } from './util.js'

export class KeyStream {
  private readonly cipher
  constructor(seed: string) {
    const key = createHash('sha256').update(seed).digest().subarray(0, 16)
    this.cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16))
  }
  /** The next `n` bytes of the stream. */
  next(n: number): Buffer {
    return this.cipher.update(Buffer.alloc(n))
  }
}

/** mulberry32: a small, fast, seeded 32-bit PRNG. */
export function prng(seed: string): () => number {
  let a = createHash('sha256').update(seed).digest().readUInt32LE(0)
  return () => {
    a = (a + 0x6d2b79f5) | 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** A fixed modification time for generated files (seconds), so that data sets are equal between runs. */
export const DATA_MTIME = 1_700_000_000

/** Writes `bytes` of the seed's keystream to `path`, in 8 MiB blocks. */
export function writeStreamFile(path: string, bytes: number, seed: string, mtime = DATA_MTIME): void {
  const ks = new KeyStream(seed)
  const fd = openSync(path, 'w', 0o644)
  try {
    for (let done = 0; done < bytes; ) {
      const n = Math.min(8 * MiB, bytes - done)
      const buf = ks.next(n)
      for (let off = 0; off < n; ) off += writeSync(fd, buf, off, n - off)
      done += n
    }
  } finally {
    closeSync(fd)
  }
  utimesSync(path, mtime, mtime)
}

export interface TreeSpec {
  /** Number of files, their sizes uniform in [minBytes, maxBytes]. */
  files: number
  minBytes: number
  maxBytes: number
  /** Directory levels below the root (files live in the deepest level). */
  levels: number
  /** Files per leaf directory, about. */
  perDir: number
}

export interface TreeStats {
  files: number
  dirs: number
  bytes: number
}

/** Writes a tree of small files under `root` (which must exist). */
export function writeTree(root: string, spec: TreeSpec, seed: string): TreeStats {
  const rnd = prng(`${seed}/sizes`)
  const ks = new KeyStream(`${seed}/bytes`)
  const leaves = Math.max(1, Math.ceil(spec.files / spec.perDir))
  const fan = Math.max(1, Math.ceil(Math.pow(leaves, 1 / spec.levels)))
  const width = String(fan - 1).length
  let dirs = 0
  let bytes = 0
  const made = new Set<string>()
  for (let i = 0; i < spec.files; i++) {
    // file i goes to leaf (i mod leaves); the leaf's path is its number written in base `fan`
    let leaf = i % leaves
    const parts: string[] = []
    for (let l = 0; l < spec.levels; l++) {
      parts.unshift(`d${String(leaf % fan).padStart(width, '0')}`)
      leaf = Math.floor(leaf / fan)
    }
    const dir = join(root, ...parts)
    if (!made.has(dir)) {
      mkdirSync(dir, { recursive: true })
      made.add(dir)
    }
    const size = spec.minBytes + Math.floor(rnd() * (spec.maxBytes - spec.minBytes + 1))
    const path = join(dir, `f${String(i).padStart(6, '0')}.dat`)
    writeFileSync(path, ks.next(size), { mode: 0o644 })
    utimesSync(path, DATA_MTIME + i, DATA_MTIME + i)
    bytes += size
  }
  dirs = made.size
  return { files: spec.files, dirs, bytes }
}

/**
 * A data set generated once into `dir`, reused while `dir/.bench-done` holds the same description.
 * Returns true if it was (re)generated.
 */
export function ensureDataSet(dir: string, description: object, make: (dir: string) => void): boolean {
  const marker = join(dir, '..', `.${dir.split('/').pop()}.done`)
  const want = JSON.stringify(description)
  if (existsSync(marker) && existsSync(dir) && readFileSync(marker, 'utf8') === want) return false
  rmSync(marker, { force: true })
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  make(dir)
  writeFileSync(marker, want)
  return true
}

export interface Sizes {
  quick: boolean
  /** W1: big files and the small-file tree. */
  w1BigFiles: number
  w1BigBytes: number
  w1Small: TreeSpec
  /** W2: many 1 KiB files. */
  w2: TreeSpec
  /** W3-W7: the big file, the appended bytes, the inserted bytes. */
  bigFile: number
  append: number
  insert: number
  /** W9 */
  w9Files: number
  w9IntervalMs: number
  w9Tree: TreeSpec
}

export function sizesFor(quick: boolean): Sizes {
  const d = quick ? 16 : 1
  return {
    quick,
    w1BigFiles: 8,
    w1BigBytes: (96 * MiB) / d,
    w1Small: { files: 20_000 / d, minBytes: 1 * KiB, maxBytes: 16 * KiB, levels: 3, perDir: 20 },
    w2: { files: 100_000 / d, minBytes: 1 * KiB, maxBytes: 1 * KiB, levels: 1, perDir: 1000 },
    bigFile: (1024 * MiB) / d,
    append: (16 * MiB) / d,
    insert: 10,
    w9Files: 200,
    w9IntervalMs: 50,
    w9Tree: { files: 1000, minBytes: 1 * KiB, maxBytes: 16 * KiB, levels: 2, perDir: 50 },
  }
}
