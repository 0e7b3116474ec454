// Chunker parameters measured on realistic data: how many bytes sfm sends for a new version of a source
// tree, of a large binary and of a log (and of the synthetic edit workload of research 6.5), for several
// min / normal / max sizes, plus average chunk size, chunks and tree nodes per GiB, and chunking speed.
//
// Run from the repository's root:
//   npm run build:bench && node build/ts/bench/chunk-params.js
// Options (environment): SFM_CHUNK_DATA (cache directory, default /tmp/sfm-chunk-data),
// SFM_CHUNK_JSON (where to write every figure as JSON, default $SFM_CHUNK_DATA/results.json).
//
// Data. Downloaded once with `npm pack` into the cache and extracted with tar (about 125 MB in all):
// typescript 5.8.3, 5.9.2, 5.9.3; three 0.186.1, 0.187.0; @esbuild/linux-x64 0.27.5, 0.27.6;
// @swc/core-linux-x64-gnu 1.16.21, 1.16.22; @biomejs/cli-linux-x64 2.6.7, 2.6.8. Generated in memory
// from fixed seeds: a 64 MiB log (v2 = v1 + 4 MiB appended; v3 = v1 without its first 8 MiB, cut at a
// line boundary, and the mean of 16 such cuts a little further on), a 128 MiB random file edited as in
// research 6.5 (copy runs of mean 256 KiB, and of mean 1 MiB), and a 1 GiB AES-CTR keystream (zero key and
// IV, as in bench/chunker.ts) for sizes, tree overhead (32 one-byte edits, one at a time) and speed.
// Every figure but the speeds is deterministic; the whole run takes under a minute on 2 cores.
//
// Cost model (bytes sfm sends for v2 when the server holds v1):
// - A v2 file whose path and content id are unchanged from v1 costs nothing (LIST already tells).
// - Every other file is walked top-down from its root. An entry whose id the server has (any level of any
//   v1 tree, or of a v2 file sent before it) costs one HAVE? hash (16 B) and one REF (24 B); a missing node
//   costs one HAVE? hash and its children are visited; a missing leaf costs one HAVE? hash plus its bytes.
//   A leaf already sent earlier in this v2 costs one REF (the client knows it sent it). An entry that
//   stands for itself on the level above (a group of one) is asked once, not once per level.
// - Frame headers and CHUNK's own hash field are not counted (25 B per chunk sent; the last table gives
//   the number of chunks sent).
//
// The chunker here is a parameterised one-byte-per-step copy of PROTOCOL.md 5.4 (same Gear table, same
// "the matching byte ends the chunk" rule); with the production constants it is checked to cut exactly
// where src/chunker.ts cuts. Masks are contiguous runs of one-bits ending at bit 30 (research 1.2).
import { createCipheriv, createHash } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { GEAR, chunkLengths } from '../src/chunker.js'
import { hash128, hashKey } from '../src/hash.js'
import { ContentTree } from '../src/tree.js'

const KiB = 1024
const MiB = 1024 * KiB
const GiB = 1024 * MiB
const HAVE_BYTES = 16 // one hash in HAVE?
const REF_BYTES = 24 // one ref in REFS: hash + u64 length

const DATA_DIR = process.env['SFM_CHUNK_DATA'] ?? '/tmp/sfm-chunk-data'
const JSON_OUT = process.env['SFM_CHUNK_JSON'] ?? join(DATA_DIR, 'results.json')

// ---------------------------------------------------------------------------------------------------
// Parameter sets

interface Params {
  readonly name: string
  readonly min: number
  readonly normal: number // where the masks switch
  readonly max: number
  readonly bitsS: number
  readonly bitsL: number
  readonly fixed?: boolean // fixed-size blocks of `max` bytes
}

/** A contiguous run of `bits` one-bits ending at bit 30. */
function mask(bits: number): number {
  return ((2 ** bits - 1) * 2 ** (31 - bits)) | 0
}

const PARAMS: Params[] = [
  { name: '4/6/32 NC1 13/11', min: 4 * KiB, normal: 6 * KiB, max: 32 * KiB, bitsS: 13, bitsL: 11 },
  { name: '8/12/64 NC1 14/12', min: 8 * KiB, normal: 12 * KiB, max: 64 * KiB, bitsS: 14, bitsL: 12 },
  { name: '16/24/128 NC1 15/13', min: 16 * KiB, normal: 24 * KiB, max: 128 * KiB, bitsS: 15, bitsL: 13 },
  { name: '16/48/256 NC2 18/14', min: 16 * KiB, normal: 48 * KiB, max: 256 * KiB, bitsS: 18, bitsL: 14 },
  { name: '32/48/256 NC1 16/14 (current)', min: 32 * KiB, normal: 48 * KiB, max: 256 * KiB, bitsS: 16, bitsL: 14 },
  { name: '32/-/256 NC0 15', min: 32 * KiB, normal: 32 * KiB, max: 256 * KiB, bitsS: 15, bitsL: 15 },
  { name: '32/64/512 NC1 17/15', min: 32 * KiB, normal: 64 * KiB, max: 512 * KiB, bitsS: 17, bitsL: 15 },
  { name: '64/96/512 NC1 17/15', min: 64 * KiB, normal: 96 * KiB, max: 512 * KiB, bitsS: 17, bitsL: 15 },
  { name: 'fixed 64', min: 0, normal: 0, max: 64 * KiB, bitsS: 0, bitsL: 0, fixed: true },
]

/** dbaarda's closed form for the expected chunk size of piecewise-exponential chunking (research 1.4). */
function predictedAverage(p: Params): number {
  if (p.fixed) return p.max
  const A1 = 2 ** p.bitsS
  const A2 = 2 ** p.bitsL
  const T1 = p.normal - p.min
  const T2 = p.max - p.normal
  return p.min + A1 - Math.exp(-T1 / A1) * (A1 - A2 * (1 - Math.exp(-T2 / A2)))
}

// ---------------------------------------------------------------------------------------------------
// The parameterised chunker (one byte per step, PROTOCOL.md 5.4 with other constants)

const G = GEAR

function cutP(buf: Buffer, start: number, end: number, min: number, normal: number, max: number, ms: number, ml: number): number {
  const remaining = end - start
  if (remaining <= min) return remaining
  const limit = start + (remaining < max ? remaining : max)
  const norm = start + (remaining < normal ? remaining : normal)
  let h = 0
  let i = start + min
  for (; i < norm; i++) {
    h = ((h << 1) + G[buf[i]!]!) | 0
    if ((h & ms) === 0) return i + 1 - start
  }
  for (; i < limit; i++) {
    h = ((h << 1) + G[buf[i]!]!) | 0
    if ((h & ml) === 0) return i + 1 - start
  }
  return limit - start
}

function cutOne(buf: Buffer, start: number, end: number, p: Params): number {
  if (p.fixed) return Math.min(p.max, end - start)
  return cutP(buf, start, end, p.min, p.normal, p.max, mask(p.bitsS), mask(p.bitsL))
}

function chunkAll(buf: Buffer, p: Params): number[] {
  const out: number[] = []
  if (p.fixed) {
    for (let pos = 0; pos < buf.length; pos += p.max) out.push(Math.min(p.max, buf.length - pos))
    return out
  }
  const ms = mask(p.bitsS)
  const ml = mask(p.bitsL)
  for (let pos = 0; pos < buf.length; ) {
    const n = cutP(buf, pos, buf.length, p.min, p.normal, p.max, ms, ml)
    out.push(n)
    pos += n
  }
  return out
}

function hashChunks(buf: Buffer, lengths: readonly number[]): Buffer {
  const ids = Buffer.allocUnsafe(lengths.length * 16)
  let pos = 0
  for (let i = 0; i < lengths.length; i++) {
    hash128(buf.subarray(pos, pos + lengths[i]!)).copy(ids, i * 16)
    pos += lengths[i]!
  }
  return ids
}

function treeOf(buf: Buffer, p: Params): { tree: ContentTree; lengths: number[] } {
  const lengths = chunkAll(buf, p)
  return { tree: ContentTree.fromLeaves(hashChunks(buf, lengths), lengths), lengths }
}

function addTreeIds(tree: ContentTree, have: Set<string>): void {
  for (let l = 0; l < tree.levels.length; l++) {
    const level = tree.levels[l]!
    for (let i = 0; i < level.count; i++) have.add(hashKey(tree.entryId(l, i)))
  }
}

interface Cost {
  data: number // bytes of missing chunks
  have: number // HAVE? hashes
  refs: number // REF entries
  chunks: number // chunks sent (CHUNK frames, 25 B of header each, not counted in meta)
}

function meta(c: Cost): number {
  return c.have * HAVE_BYTES + c.refs * REF_BYTES
}

/** The top-down walk of one file's tree against what the server has (see the header). */
function walk(tree: ContentTree, have: Set<string>, sent: Set<string>, cost: Cost): void {
  const top = tree.levels.length - 1
  if (tree.levels[top]!.count === 0) return // the empty file: nothing to send
  const visit = (l: number, i: number): void => {
    const level = tree.levels[l]!
    if (l > 0 && level.childCount[i] === 1) return visit(l - 1, level.childStart[i]!) // same id below
    const key = hashKey(tree.entryId(l, i))
    if (l === 0 && sent.has(key)) {
      cost.refs++
      return
    }
    cost.have++
    if (have.has(key)) {
      cost.refs++
      return
    }
    if (l === 0) {
      cost.data += level.lengths[i]!
      cost.chunks++
      sent.add(key)
      return
    }
    const first = level.childStart[i]!
    for (let c = first; c < first + level.childCount[i]!; c++) visit(l - 1, c)
  }
  visit(top, 0)
}

/**
 * A buffer's chunks, with the edits that can be measured by re-cutting only what changed: chunks are
 * memoryless (a cut depends only on the bytes from its chunk's start to the cut), so once a new cut lands
 * on an old boundary every later chunk is the old one.
 */
class Chunked {
  private constructor(
    readonly lengths: number[],
    readonly ids: Buffer,
    readonly offsets: number[],
    readonly index: Map<number, number>, // boundary offset -> index of the chunk that starts there
    readonly tree: ContentTree,
  ) {}

  static of(buf: Buffer, p: Params): Chunked {
    const lengths = chunkAll(buf, p)
    const ids = hashChunks(buf, lengths)
    const offsets: number[] = []
    const index = new Map<number, number>()
    for (let i = 0, pos = 0; i <= lengths.length; pos += lengths[i++] ?? 0) {
      offsets.push(pos)
      index.set(pos, i)
    }
    return new Chunked(lengths, ids, offsets, index, ContentTree.fromLeaves(ids, lengths))
  }

  /** The tree of `buf` after its byte at x has been changed (the caller changes it, and back). */
  withByteChanged(buf: Buffer, x: number, p: Params): ContentTree {
    let lo = 0
    let hi = this.lengths.length - 1
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1
      if (this.offsets[mid]! <= x) lo = mid
      else hi = mid - 1
    }
    return this.recut(buf, this.offsets[lo]!, lo, 0, p)
  }

  /** The tree of `buf.subarray(cut)`. */
  withPrefixRemoved(buf: Buffer, cut: number, p: Params): ContentTree {
    return this.recut(buf.subarray(cut), 0, 0, cut, p)
  }

  // Cuts `buf` from `from` (chunk k of the old file starts there) until a cut lands on an old boundary;
  // `shift` is how far the old offsets are ahead of `buf`'s.
  private recut(buf: Buffer, from: number, k: number, shift: number, p: Params): ContentTree {
    const fresh: number[] = []
    let pos = from
    let j: number | undefined
    while (pos < buf.length) {
      const len = cutOne(buf, pos, buf.length, p)
      fresh.push(len)
      pos += len
      j = this.index.get(pos + shift)
      if (j !== undefined) break
    }
    if (j === undefined) j = this.lengths.length
    const freshIds = hashChunks(buf.subarray(from, pos), fresh)
    const lengths = [...this.lengths.slice(0, k), ...fresh, ...this.lengths.slice(j)]
    const ids = Buffer.concat([this.ids.subarray(0, k * 16), freshIds, this.ids.subarray(j * 16)])
    return ContentTree.fromLeaves(ids, lengths)
  }
}

// ---------------------------------------------------------------------------------------------------
// Seeded generators

function sfc32(a: number, b: number, c: number, d: number): () => number {
  return () => {
    a |= 0; b |= 0; c |= 0; d |= 0
    const t = (((a + b) | 0) + d) | 0
    d = (d + 1) | 0
    a = b ^ (b >>> 9)
    b = (c + (c << 3)) | 0
    c = (c << 21) | (c >>> 11)
    c = (c + t) | 0
    return (t >>> 0) / 4294967296
  }
}

function rngFrom(seed: string): () => number {
  const d = createHash('sha256').update(seed).digest()
  const r = sfc32(d.readInt32LE(0), d.readInt32LE(4), d.readInt32LE(8), d.readInt32LE(12))
  for (let i = 0; i < 20; i++) r()
  return r
}

/** `bytes` of AES-128-CTR keystream under a key derived from `seed` ('' = zero key, as bench/chunker.ts). */
function keystream(seed: string, bytes: number): Buffer {
  const key = seed === '' ? Buffer.alloc(16) : createHash('sha256').update(seed).digest().subarray(0, 16)
  const out = Buffer.alloc(bytes)
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16))
  for (let pos = 0; pos < bytes; pos += 64 * MiB) {
    const n = Math.min(64 * MiB, bytes - pos)
    cipher.update(out.subarray(pos, pos + n)).copy(out, pos)
  }
  return out
}

function exponential(rng: () => number, mean: number): number {
  return Math.max(1, Math.round(-mean * Math.log(1 - rng())))
}

/** Research 6.5: copy runs (exponential, mean `run`), then insert or delete (each p = 1/2, mean 4 KiB). */
function syntheticEdit(base: Buffer, run: number): { v2: Buffer; inserted: number } {
  const rng = rngFrom(`sfm-synth-edits-${run}`)
  const fresh = keystream(`sfm-synth-inserts-${run}`, 64 * MiB)
  let freshPos = 0
  const parts: Buffer[] = []
  let inserted = 0
  for (let pos = 0; pos < base.length; ) {
    const n = exponential(rng, run)
    parts.push(base.subarray(pos, Math.min(base.length, pos + n)))
    pos += n
    if (pos >= base.length) break
    const m = exponential(rng, 4 * KiB)
    if (rng() < 0.5) {
      parts.push(fresh.subarray(freshPos, freshPos + m))
      freshPos += m
      inserted += m
    } else {
      pos += m
    }
  }
  return { v2: Buffer.concat(parts), inserted }
}

// A service log: ISO timestamps, levels, components, request ids, users, routes, latencies, and now and
// then a multi-line stack trace.
class LogGenerator {
  private readonly rng = rngFrom('sfm-log')
  private t = Date.UTC(2025, 0, 6, 8, 0, 0)
  private readonly users: string[] = []
  constructor() {
    for (let i = 0; i < 5000; i++) this.users.push(`u${10000 + Math.floor(this.rng() * 90000)}`)
  }
  private int(n: number): number {
    return Math.floor(this.rng() * n)
  }
  private pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!
  }
  private hex(n: number): string {
    let s = ''
    for (let i = 0; i < n; i++) s += '0123456789abcdef'[this.int(16)]
    return s
  }
  private ip(): string {
    return `10.${this.int(4)}.${this.int(256)}.${1 + this.int(254)}`
  }
  line(): string {
    this.t += this.int(40) + (this.rng() < 0.01 ? this.int(2000) : 0)
    const ts = new Date(this.t).toISOString()
    const r = this.rng()
    const level = r < 0.62 ? 'INFO' : r < 0.87 ? 'DEBUG' : r < 0.97 ? 'WARN' : 'ERROR'
    const comp = this.pick(COMPONENTS)
    const req = this.hex(16)
    const user = this.pick(this.users)
    let msg: string
    switch (comp) {
      case 'http': {
        const route = this.pick(ROUTES).replace(':id', String(this.int(100000)))
        const status = level === 'ERROR' ? this.pick([500, 502, 503]) : level === 'WARN' ? this.pick([400, 401, 404, 429]) : this.pick([200, 200, 200, 201, 204, 304])
        msg = `${this.pick(['GET', 'GET', 'GET', 'POST', 'PUT', 'DELETE'])} ${route} ${status} ${(this.rng() * 250).toFixed(1)}ms bytes=${this.int(60000)} user=${user} ip=${this.ip()} ua="${this.pick(AGENTS)}"`
        break
      }
      case 'db':
        msg = level === 'WARN'
          ? `slow query (${200 + this.int(5000)}ms): SELECT * FROM ${this.pick(TABLES)} WHERE ${this.pick(['id', 'user_id', 'order_id'])} = $1 LIMIT ${this.pick([1, 10, 50, 100])}`
          : `query ok table=${this.pick(TABLES)} rows=${this.int(500)} took=${(this.rng() * 30).toFixed(2)}ms pool=${this.int(20)}/20`
        break
      case 'auth':
        msg = level === 'WARN' ? `login failed user=${user} ip=${this.ip()} attempts=${1 + this.int(5)}` : this.pick([`login ok user=${user} ip=${this.ip()} mfa=${this.pick(['totp', 'none', 'webauthn'])}`, `token refreshed user=${user} ttl=3600s`, `session ${this.hex(24)} expired user=${user}`])
        break
      case 'cache':
        msg = this.pick([`miss key=user:${user}:profile`, `hit key=product:${this.int(20000)}`, `evicted ${this.int(5000)} entries size=${(this.rng() * 512).toFixed(1)}MB`, `set key=cart:${user} ttl=${this.pick([60, 300, 900])}s`])
        break
      case 'worker':
        msg = `job ${this.hex(12)} type=${this.pick(JOBS)} ${level === 'ERROR' ? 'failed' : 'finished'} in ${this.int(20000)}ms attempt=${1 + this.int(3)}`
        break
      default:
        msg = `${this.pick(['tick', 'lease renewed', 'heartbeat', 'rebalanced partitions'])} node=${this.pick(['api-1', 'api-2', 'api-3', 'worker-1', 'worker-2'])} lag=${this.int(1000)}ms`
    }
    let out = `${ts} ${level.padEnd(5)} [${comp}] req=${req} ${msg}\n`
    if (level === 'ERROR' && this.rng() < 0.5) {
      out += `Error: ${this.pick(ERRORS)}\n`
      const depth = 4 + this.int(8)
      for (let i = 0; i < depth; i++) {
        const f = this.pick(FRAMES)
        out += `    at ${f[0]} (${f[1]}:${1 + this.int(900)}:${1 + this.int(60)})\n`
      }
    }
    return out
  }
  /** Whole lines, as long as they fit in `bytes`; the line that does not fit is kept for the next call. */
  private pending = ''
  block(bytes: number): Buffer {
    const parts: Buffer[] = []
    let batch: string[] = []
    let batchLength = 0
    let total = 0
    for (;;) {
      const line = this.pending !== '' ? this.pending : this.line()
      this.pending = ''
      if (total + line.length > bytes) {
        this.pending = line
        break
      }
      batch.push(line)
      batchLength += line.length
      total += line.length
      if (batchLength > MiB) {
        parts.push(Buffer.from(batch.join(''), 'latin1'))
        batch = []
        batchLength = 0
      }
    }
    parts.push(Buffer.from(batch.join(''), 'latin1'))
    return Buffer.concat(parts)
  }
}

const COMPONENTS = ['http', 'http', 'http', 'db', 'db', 'auth', 'cache', 'cache', 'worker', 'cluster'] as const
const ROUTES = ['/api/v1/orders/:id', '/api/v1/orders', '/api/v1/users/:id/profile', '/api/v1/products/:id', '/api/v1/search?q=shoes&page=:id', '/api/v1/cart', '/healthz', '/static/app.:id.js', '/api/v2/invoices/:id/pdf']
const AGENTS = ['Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0', 'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) Safari/605.1.15', 'okhttp/4.12.0', 'curl/8.5.0', 'Go-http-client/2.0']
const TABLES = ['orders', 'users', 'products', 'invoices', 'sessions', 'cart_items']
const JOBS = ['send-email', 'resize-image', 'export-csv', 'sync-inventory', 'charge-card']
const ERRORS = ['connect ECONNREFUSED 10.0.3.17:5432', 'read ECONNRESET', 'Request timed out after 30000ms', "Cannot read properties of undefined (reading 'id')", 'deadlock detected']
const FRAMES: ReadonlyArray<readonly [string, string]> = [
  ['Socket.onEnd', '/srv/app/node_modules/pg/lib/connection.js'],
  ['Pool.acquire', '/srv/app/node_modules/pg-pool/index.js'],
  ['OrderService.create', '/srv/app/dist/services/order.js'],
  ['async Router.handle', '/srv/app/dist/http/router.js'],
  ['processTicksAndRejections', 'node:internal/process/task_queues'],
  ['Worker.run', '/srv/app/dist/jobs/worker.js'],
  ['CartController.update', '/srv/app/dist/http/cart.js'],
]

// ---------------------------------------------------------------------------------------------------
// Datasets

type Files = Map<string, Buffer> // path -> bytes

interface Dataset {
  readonly name: string
  readonly v1: Files
  readonly v2: Files
  readonly ideal?: number // bytes that are really new in v2, where known
  /** Instead of v1 -> v2: the mean over several variants, measured by re-cutting only what changed. */
  readonly custom?: (p: Params) => { v2Bytes: number; v2Chunks: number; cost: Cost }
}

function fetchPackage(spec: string): string {
  const dirName = spec.replace(/^@/, '').replace('/', '-').replace(/@/, '-')
  const dir = join(DATA_DIR, 'x', dirName)
  if (existsSync(join(dir, 'package'))) return join(dir, 'package')
  const tgzDir = join(DATA_DIR, 'tgz')
  mkdirSync(tgzDir, { recursive: true })
  const tgz = join(tgzDir, `${dirName}.tgz`)
  if (!existsSync(tgz)) {
    console.error(`fetching ${spec} with npm pack`)
    execFileSync('npm', ['pack', spec, '--pack-destination', tgzDir, '--silent'], { stdio: ['ignore', 'ignore', 'inherit'] })
  }
  mkdirSync(dir, { recursive: true })
  execFileSync('tar', ['xzf', tgz, '-C', dir])
  return join(dir, 'package')
}

function readTree(root: string): Files {
  const files: Files = new Map()
  const walkDir = (dir: string, rel: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const p = join(dir, e.name)
      const r = rel === '' ? e.name : `${rel}/${e.name}`
      if (e.isDirectory()) walkDir(p, r)
      else if (e.isFile()) files.set(r, readFileSync(p))
    }
  }
  walkDir(root, '')
  return files
}

function packagePair(name: string, a: string, b: string, single?: string): () => Dataset {
  return () => {
    let v1 = readTree(fetchPackage(a))
    let v2 = readTree(fetchPackage(b))
    if (single !== undefined) {
      v1 = new Map([[single, v1.get(single)!]])
      v2 = new Map([[single, v2.get(single)!]])
    }
    return { name, v1, v2 }
  }
}

const one = (b: Buffer): Files => new Map([['file', b]])

let logCache: { v1: Buffer; appended: Buffer } | undefined
function logs(): { v1: Buffer; appended: Buffer } {
  if (logCache === undefined) {
    const gen = new LogGenerator()
    const v1 = gen.block(64 * MiB)
    logCache = { v1, appended: gen.block(4 * MiB) }
  }
  return logCache
}

const DATASETS: Array<() => Dataset> = [
  packagePair('src: typescript 5.8.3 -> 5.9.3', 'typescript@5.8.3', 'typescript@5.9.3'),
  packagePair('src: typescript 5.9.2 -> 5.9.3', 'typescript@5.9.2', 'typescript@5.9.3'),
  packagePair('src: three 0.186.1 -> 0.187.0', 'three@0.186.1', 'three@0.187.0'),
  packagePair('bin: esbuild 0.27.5 -> 0.27.6 (11 MB)', '@esbuild/linux-x64@0.27.5', '@esbuild/linux-x64@0.27.6', 'bin/esbuild'),
  packagePair('bin: swc 1.16.21 -> 1.16.22 (10 MB)', '@swc/core-linux-x64-gnu@1.16.21', '@swc/core-linux-x64-gnu@1.16.22', 'swc.linux-x64-gnu.node'),
  packagePair('bin: biome 2.6.7 -> 2.6.8 (98 MB)', '@biomejs/cli-linux-x64@2.6.7', '@biomejs/cli-linux-x64@2.6.8', 'biome'),
  () => {
    const { v1, appended } = logs()
    return { name: 'log: 64 MiB + 4 MiB appended', v1: one(v1), v2: one(Buffer.concat([v1, appended])), ideal: appended.length }
  },
  () => {
    const { v1 } = logs()
    const cut = v1.indexOf(0x0a, 8 * MiB - 1) + 1 // first line boundary at or after 8 MiB
    return { name: `log: 64 MiB, first 8 MiB removed (cut at ${cut})`, v1: one(v1), v2: one(v1.subarray(cut)), ideal: 0 }
  },
  () => {
    // The same at 16 line boundaries from 8 MiB on (stride 61,441 bytes): one cut is one sample of where
    // the first new chunk ends and how soon the cuts fall back in step.
    const { v1 } = logs()
    const cuts: number[] = []
    for (let k = 0; k < 16; k++) cuts.push(v1.indexOf(0x0a, 8 * MiB - 1 + k * 61_441) + 1)
    const custom = (p: Params) => {
      const base = Chunked.of(v1, p)
      const have = new Set<string>()
      addTreeIds(base.tree, have)
      const cost: Cost = { data: 0, have: 0, refs: 0, chunks: 0 }
      let v2Bytes = 0
      let v2Chunks = 0
      for (const cut of cuts) {
        const t = base.withPrefixRemoved(v1, cut, p)
        walk(t, have, new Set(), cost)
        v2Bytes += v1.length - cut
        v2Chunks += t.levels[0]!.count
      }
      const n = cuts.length
      return { v2Bytes: v2Bytes / n, v2Chunks: v2Chunks / n, cost: { data: cost.data / n, have: cost.have / n, refs: cost.refs / n, chunks: cost.chunks / n } }
    }
    return { name: 'log: first ~8 MiB removed, mean of 16 cuts', v1: one(v1), v2: new Map(), ideal: 0, custom }
  },
  () => {
    const base = keystream('sfm-synth-base', 128 * MiB)
    const { v2, inserted } = syntheticEdit(base, 256 * KiB)
    return { name: 'synthetic 128 MiB, runs 256K, edits 4K', v1: one(base), v2: one(v2), ideal: inserted }
  },
  () => {
    const base = keystream('sfm-synth-base', 128 * MiB)
    const { v2, inserted } = syntheticEdit(base, MiB)
    return { name: 'synthetic 128 MiB, runs 1M, edits 4K', v1: one(base), v2: one(v2), ideal: inserted }
  },
]

interface Result {
  dataset: string
  params: string
  v2Bytes: number
  changedFiles: number
  changedBytes: number // bytes of changed v2 files whose whole content is not in v1 (no chunk dedup)
  v2Chunks: number // chunks of the changed files
  data: number
  have: number
  refs: number
  chunks: number
  meta: number
  total: number
  ideal?: number
}

function measureDataset(ds: Dataset, p: Params): Result {
  if (ds.custom !== undefined) {
    const { v2Bytes, v2Chunks, cost } = ds.custom(p)
    const m = meta(cost)
    return { dataset: ds.name, params: p.name, v2Bytes, changedFiles: 1, changedBytes: v2Bytes, v2Chunks, ...cost, meta: m, total: cost.data + m, ...(ds.ideal === undefined ? {} : { ideal: ds.ideal }) }
  }
  const have = new Set<string>()
  const oldIds = new Map<string, string>()
  for (const [path, buf] of ds.v1) {
    const { tree } = treeOf(buf, p)
    addTreeIds(tree, have)
    oldIds.set(path, hashKey(tree.contentId))
  }
  const sent = new Set<string>()
  const cost: Cost = { data: 0, have: 0, refs: 0, chunks: 0 }
  let v2Bytes = 0
  let changedFiles = 0
  let changedBytes = 0
  let v2Chunks = 0
  const wholeFiles = new Set<string>()
  for (const buf of ds.v1.values()) wholeFiles.add(hashKey(hash128(buf)))
  for (const [path, buf] of [...ds.v2].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
    v2Bytes += buf.length
    const { tree, lengths } = treeOf(buf, p)
    if (oldIds.get(path) === hashKey(tree.contentId)) continue // unchanged: LIST says so
    changedFiles++
    v2Chunks += lengths.length
    const whole = hashKey(hash128(buf))
    if (!wholeFiles.has(whole)) changedBytes += buf.length
    wholeFiles.add(whole)
    walk(tree, have, sent, cost)
    addTreeIds(tree, have)
  }
  const m = meta(cost)
  return { dataset: ds.name, params: p.name, v2Bytes, changedFiles, changedBytes, v2Chunks, ...cost, meta: m, total: cost.data + m, ...(ds.ideal === undefined ? {} : { ideal: ds.ideal }) }
}

// ---------------------------------------------------------------------------------------------------
// Sizes, tree overhead on 1 GiB, speed

interface Overhead {
  params: string
  predictedAvg: number
  avg: number
  sd: number
  largest: number
  atMax: number // share of chunks cut at max
  chunksPerGiB: number
  nodesPerGiB: number
  levels: number
  flatHave: number // HAVE? bytes to ask for every chunk of a new 1 GiB file, without a tree
  treeHave: number // the same walking the tree (leaves + nodes)
  flatRefs: number // REF bytes to name every chunk of an unchanged 1 GiB file, without a tree
  editMeta: number // metadata of the walk after one byte is overwritten (mean of EDITS places)
  editHave: number
  editRefs: number
  editData: number
  speed: number // MiB/s by CPU time, one-byte loop, 256 MiB: median of the rounds
  speedBest: number
  hashTreeSpeed: number // MiB/s by CPU time of XXH3-128 per chunk + ContentTree, 256 MiB: median
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[s.length >> 1]!
}

const EDITS = 32 // one-byte overwrites, one at a time, spread over the 1 GiB file

function overhead(big: Buffer, p: Params): Overhead {
  const c = Chunked.of(big, p)
  const { lengths, tree } = c
  const n = lengths.length
  const avg = big.length / n
  let sq = 0
  let largest = 0
  let atMax = 0
  for (const l of lengths) {
    sq += (l - avg) ** 2
    if (l > largest) largest = l
    if (l === p.max) atMax++
  }
  let nodes = 0
  for (let l = 1; l < tree.levels.length; l++) {
    const level = tree.levels[l]!
    for (let i = 0; i < level.count; i++) if (level.childCount[i]! >= 2) nodes++
  }
  // One byte overwritten at a time, at EDITS places; the walk of each new tree against the old one.
  const have = new Set<string>()
  addTreeIds(tree, have)
  const cost: Cost = { data: 0, have: 0, refs: 0, chunks: 0 }
  for (let k = 0; k < EDITS; k++) {
    const x = Math.floor(((k + 0.5) * big.length) / EDITS) + 7919 * k
    big[x] = big[x]! ^ 0xff
    const edited = c.withByteChanged(big, x, p)
    big[x] = big[x]! ^ 0xff
    walk(edited, have, new Set(), cost)
  }
  const perGiB = GiB / big.length
  return {
    params: p.name,
    predictedAvg: predictedAverage(p),
    avg,
    sd: Math.sqrt(sq / n),
    largest,
    atMax: atMax / n,
    chunksPerGiB: n * perGiB,
    nodesPerGiB: nodes * perGiB,
    levels: tree.levels.length,
    flatHave: n * HAVE_BYTES,
    treeHave: (n + nodes) * HAVE_BYTES,
    flatRefs: n * REF_BYTES,
    editMeta: meta(cost) / EDITS,
    editHave: cost.have / EDITS,
    editRefs: cost.refs / EDITS,
    editData: cost.data / EDITS,
    speed: 0,
    speedBest: 0,
    hashTreeSpeed: 0,
  }
}

/**
 * Chunking speed by CPU time (the machine may be shared: CPU time is what other processes disturb
 * least), in rounds that run every chunker once each, so that a busy spell hits all of them alike.
 * Returns, per runner, the median and the best rate (MiB/s) over the rounds after the warm-up ones.
 */
function speeds(runners: Array<() => unknown>, bytes: number, warm: number, rounds: number): Array<{ median: number; best: number }> {
  const rates: number[][] = runners.map(() => [])
  for (let r = 0; r < warm + rounds; r++) {
    runners.forEach((run, i) => {
      const c0 = process.cpuUsage()
      run()
      const c = process.cpuUsage(c0)
      if (r >= warm) rates[i]!.push(bytes / MiB / ((c.user + c.system) / 1e6))
    })
  }
  return rates.map((xs) => ({ median: median(xs), best: Math.max(...xs) }))
}

// ---------------------------------------------------------------------------------------------------
// Main

const fmtK = (b: number): string => (b / KiB).toLocaleString('en-US', { maximumFractionDigits: b < 10 * KiB ? 1 : 0 })
const pct = (a: number, b: number): string => (b === 0 ? '-' : `${((100 * a) / b).toFixed(1)}%`)

function table(header: string[], rows: string[][]): string {
  const lines = [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`]
  for (const r of rows) lines.push(`| ${r.join(' | ')} |`)
  return lines.join('\n')
}

const started = Date.now()
mkdirSync(DATA_DIR, { recursive: true })

// The 1 GiB keystream of bench/chunker.ts; its first 256 MiB serve for the speeds and the self-check.
const big = keystream('', GiB)

// Self-check: with the production constants the bench chunker cuts exactly where src/chunker.ts does,
// on random bytes and on text.
{
  const current = PARAMS.find((p) => p.name.includes('current'))!
  const sample = big.subarray(0, 64 * MiB)
  const text = logs().v1.subarray(0, 16 * MiB)
  for (const b of [sample, text]) {
    const a = chunkAll(b, current)
    const c = chunkLengths(b)
    if (a.length !== c.length || a.some((x, i) => x !== c[i])) throw new Error('bench chunker disagrees with src/chunker.ts')
  }
  console.log('self-check: the bench chunker with 32/48/256 16/14 cuts exactly as src/chunker.ts (64 MiB random, 16 MiB log)')
}

const overheads: Overhead[] = []
for (const p of PARAMS) {
  overheads.push(overhead(big, p))
  console.error(`  overhead ${p.name} done (${((Date.now() - started) / 1000).toFixed(0)} s)`)
}

// Speeds: every CDC parameter set with the bench's one-byte loop, and src/chunker.ts's chunkLengths
// (two bytes per step, 8 per iteration, constants inlined), on the same 256 MiB.
const speedBuf = big.subarray(0, 256 * MiB)
const cdc = PARAMS.filter((p) => !p.fixed)
const SPEED_ROUNDS = 5
const cuts = PARAMS.map((p) => chunkAll(speedBuf, p))
const measured = speeds(
  [
    ...cdc.map((p) => () => chunkAll(speedBuf, p)),
    () => chunkLengths(speedBuf),
    ...PARAMS.map((_, i) => () => ContentTree.fromLeaves(hashChunks(speedBuf, cuts[i]!), cuts[i]!)),
  ],
  speedBuf.length,
  1,
  SPEED_ROUNDS,
)
cdc.forEach((p, i) => {
  const o = overheads.find((x) => x.params === p.name)!
  o.speed = measured[i]!.median
  o.speedBest = measured[i]!.best
})
PARAMS.forEach((p, i) => {
  overheads.find((x) => x.params === p.name)!.hashTreeSpeed = measured[cdc.length + 1 + i]!.median
})
const prod = measured[cdc.length]!
console.log(`production src/chunker.ts chunkLengths (32/48/256, two bytes per step), 256 MiB: ${prod.median.toFixed(0)} MiB/s by CPU time (median of ${SPEED_ROUNDS}, best ${prod.best.toFixed(0)})`)
console.error(`  speeds done (${((Date.now() - started) / 1000).toFixed(0)} s)`)

const results: Result[] = []
const datasetNames: string[] = []
for (const make of DATASETS) {
  const ds = make()
  datasetNames.push(ds.name)
  for (const p of PARAMS) results.push(measureDataset(ds, p))
  console.error(`  ${ds.name} done (${((Date.now() - started) / 1000).toFixed(0)} s)`)
}

console.log('\n## Sizes, tree and speed (1 GiB AES-CTR keystream; speed = the bench\'s one-byte loop on its first 256 MiB)\n')
console.log(
  table(
    ['params', 'avg KiB (predicted)', 'sd KiB', 'largest KiB', 'at max', 'chunks/GiB', 'nodes/GiB', 'levels', 'HAVE? new 1 GiB: flat / tree KiB', 'REFs flat KiB', '1-byte edit (mean of 32): HAVE? + REF = meta KiB; data KiB', 'chunk MiB/s by CPU, median (best)', 'hash+tree MiB/s'],
    overheads.map((o) => [
      o.params,
      `${(o.avg / KiB).toFixed(1)} (${(o.predictedAvg / KiB).toFixed(1)})`,
      (o.sd / KiB).toFixed(1),
      (o.largest / KiB).toFixed(0),
      pct(o.atMax, 1),
      Math.round(o.chunksPerGiB).toLocaleString('en-US'),
      Math.round(o.nodesPerGiB).toLocaleString('en-US'),
      String(o.levels),
      `${fmtK(o.flatHave)} / ${fmtK(o.treeHave)}`,
      fmtK(o.flatRefs),
      `${o.editHave.toFixed(0)} + ${o.editRefs.toFixed(0)} = ${fmtK(o.editMeta)}; ${fmtK(o.editData)}`,
      o.speed === 0 ? '-' : `${o.speed.toFixed(0)} (${o.speedBest.toFixed(0)})`,
      o.hashTreeSpeed.toFixed(0),
    ]),
  ),
)

console.log('\n## Bytes to send for v2 (KiB, data + HAVE?/REF metadata), server holding v1\n')
const short = PARAMS.map((p) => p.name)
{
  const rows: string[][] = []
  for (const name of datasetNames) {
    const rs = results.filter((r) => r.dataset === name)
    const r0 = rs[0]!
    rows.push([
      name,
      fmtK(r0.v2Bytes),
      fmtK(r0.changedBytes),
      r0.ideal === undefined ? '-' : fmtK(r0.ideal),
      ...rs.map((r) => fmtK(r.total)),
    ])
  }
  console.log(table(['dataset', 'v2 KiB', 'changed files KiB', 'new bytes KiB', ...short], rows))
}
console.log('\n## Of which metadata (KiB of HAVE? hashes + REFs)\n')
{
  const rows: string[][] = []
  for (const name of datasetNames) {
    rows.push([name, ...results.filter((r) => r.dataset === name).map((r) => `${fmtK(r.meta)}`)])
  }
  console.log(table(['dataset', ...short], rows))
}
console.log('\n## Total sent relative to the current parameters (100 = 32/48/256 NC1)\n')
{
  const rows: string[][] = []
  for (const name of datasetNames) {
    const rs = results.filter((r) => r.dataset === name)
    const base = rs.find((r) => r.params.includes('current'))!.total
    rows.push([name, ...rs.map((r) => (base === 0 ? '-' : ((100 * r.total) / base).toFixed(0)))])
  }
  // Geometric mean over the data sets.
  const geo = PARAMS.map((p) => {
    let s = 0
    for (const name of datasetNames) {
      const rs = results.filter((r) => r.dataset === name)
      const base = rs.find((r) => r.params.includes('current'))!.total
      s += Math.log(rs.find((r) => r.params === p.name)!.total / base)
    }
    return (100 * Math.exp(s / datasetNames.length)).toFixed(0)
  })
  rows.push(['geometric mean', ...geo])
  console.log(table(['dataset', ...short], rows))
}
console.log('\n## Duplicate bytes found (research 6.5 metric: (v2 - data sent) / (v2 - new bytes)), where the new bytes are known\n')
{
  const rows: string[][] = []
  for (const name of datasetNames) {
    const rs = results.filter((r) => r.dataset === name)
    if (rs[0]!.ideal === undefined) continue
    rows.push([name, ...rs.map((r) => pct(r.v2Bytes - r.data, r.v2Bytes - r.ideal!))])
  }
  console.log(table(['dataset', ...short], rows))
}
console.log('\n## Chunks in the changed v2 files / chunks sent (for the mean-of-16 row: per cut)\n')
{
  const rows: string[][] = []
  for (const name of datasetNames) {
    const rs = results.filter((r) => r.dataset === name)
    rows.push([name, `${rs[0]!.changedFiles}`, ...rs.map((r) => `${Math.round(r.v2Chunks)} / ${Math.round(r.chunks)}`)])
  }
  console.log(table(['dataset', 'changed files', ...short], rows))
}

writeFileSync(JSON_OUT, JSON.stringify({ productionSpeed: prod, overheads, results }, null, 1))
console.log(`\nall figures: ${JSON_OUT}; ${((Date.now() - started) / 1000).toFixed(0)} s`)
