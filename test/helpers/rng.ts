// The seeded PRNG of the fuzzer and the fault suite: sfc32 (32-bit state words, fast in JS), seeded
// through splitmix32, so that a printed seed repeats a run's choices.
import { randomBytes } from 'node:crypto'

function splitmix32(state: { s: number }): number {
  state.s = (state.s + 0x9e3779b9) | 0
  let z = state.s
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
  return (z ^ (z >>> 16)) >>> 0
}

export class Rng {
  private a: number
  private b: number
  private c: number
  private d: number

  /** A generator for (seed, ...salt): each target and each case gets its own independent stream. */
  constructor(seed: number, ...salt: number[]) {
    const st = { s: seed | 0 }
    for (const x of salt) st.s = (splitmix32(st) ^ Math.imul(x | 0, 0x27d4eb2d)) | 0
    this.a = splitmix32(st)
    this.b = splitmix32(st)
    this.c = splitmix32(st)
    this.d = splitmix32(st) | 1
    for (let i = 0; i < 12; i++) this.u32()
  }

  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0
    this.d = (this.d + 1) | 0
    this.a = this.b ^ (this.b >>> 9)
    this.b = (this.c + (this.c << 3)) | 0
    this.c = (this.c << 21) | (this.c >>> 11)
    this.c = (this.c + t) | 0
    return t >>> 0
  }

  /** 0 <= n < max (max up to 2^32). */
  int(max: number): number {
    if (max <= 0) return 0
    if (max <= 0x1_0000_0000) return Math.floor((this.u32() / 0x1_0000_0000) * max)
    return Math.floor(((this.u32() * 0x1_0000_0000 + this.u32()) / 2 ** 64) * max)
  }

  /** A float in [0, 1). */
  next(): number {
    return this.u32() / 0x1_0000_0000
  }

  /** lo <= n <= hi. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1)
  }

  chance(p: number): boolean {
    return this.u32() / 0x1_0000_0000 < p
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!
  }

  /** One of `items`, each with its weight. */
  weighted<T>(items: readonly (readonly [number, T])[]): T {
    let total = 0
    for (const [w] of items) total += w
    let x = (this.u32() / 0x1_0000_0000) * total
    for (const [w, v] of items) {
      if (x < w) return v
      x -= w
    }
    return items[items.length - 1]![1]
  }

  bytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n)
    let i = 0
    for (; i + 4 <= n; i += 4) out.writeUInt32LE(this.u32(), i)
    for (; i < n; i++) out[i] = this.u32() & 0xff
    return out
  }

  /** A small length: usually tiny, sometimes a few hundred, rarely large. */
  size(max: number): number {
    const r = this.weighted<number>([
      [5, 8],
      [4, 64],
      [2, 600],
      [1, 5_000],
    ])
    return this.int(Math.min(r, max) + 1)
  }

  /** Up to `n` distinct items, in random order. */
  sample<T>(items: readonly T[], n: number): T[] {
    const copy = [...items]
    const out: T[] = []
    while (out.length < n && copy.length > 0) out.push(copy.splice(this.int(copy.length), 1)[0]!)
    return out
  }
}

/** The seed in the environment variable `name` (decimal or 0x hex) if set, else a fresh random one. */
export function seedFromEnv(name: string, env: NodeJS.ProcessEnv = process.env): number {
  const s = env[name]
  if (s !== undefined && s.trim() !== '') {
    const n = Number(s.trim())
    if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, got ${JSON.stringify(s)}`)
    return n >>> 0
  }
  return randomBytes(4).readUInt32BE(0)
}
