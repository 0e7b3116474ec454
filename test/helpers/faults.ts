// Helpers for the fault-injection suite (test/integration/faults.ts): a seeded random generator, fast
// seeded content, a data set that records every version it writes, and a monitor that polls the mirror
// from a worker thread and checks that every regular file at a final path is a version its source had.
import { createCipheriv, createHash } from 'node:crypto'
import {
  appendFileSync,
  chmodSync,
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
  writeSync,
} from 'node:fs'
import { join } from 'node:path'
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads'
import { waitForMirror, waitUntil } from './procs.js'
import { Rng, seedFromEnv } from './rng.js'
import { describeTree, firstDifference } from './tree.js'

export { Rng }

export const MiB = 1 << 20

// ------------------------------------------------------------------------------------------------
// Seeds and random numbers

/** The seed of this run: SFM_FAULT_SEED if set, otherwise a fresh one (print it to repeat a run). */
export const runSeed = (): number => seedFromEnv('SFM_FAULT_SEED')

/** A seed for one part of a run, so that each test draws its own reproducible sequence. */
export function subSeed(seed: number, label: string): number {
  return createHash('sha256').update(`${seed}:${label}`).digest().readUInt32LE(0)
}

/** `size` pseudo-random bytes determined by `label` (AES-128-CTR: fast enough for hundreds of MiB). */
export function seededBytes(label: string, size: number): Buffer {
  const key = createHash('sha256').update(label).digest()
  const cipher = createCipheriv('aes-128-ctr', key.subarray(0, 16), key.subarray(16, 32))
  return cipher.update(Buffer.alloc(size))
}

export function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex')
}

// ------------------------------------------------------------------------------------------------
// Content signatures: the monitor and the data set must compute them the same way, so the code is
// one string, compiled here and in the worker. Files up to 4 MiB are hashed whole; bigger ones by their
// size, first and last MiB, and 16 blocks of 4 KiB spread between them.

const SIGNATURE_BODY = `
  const MiB = 1048576
  const h = createHash('sha256')
  h.update(String(size) + ':')
  if (size <= 4 * MiB) {
    h.update(read(0, size))
    return 'f' + h.digest('hex')
  }
  h.update(read(0, MiB))
  const step = Math.floor((size - 2 * MiB) / 17)
  for (let i = 1; i <= 16; i++) h.update(read(MiB + i * step, 4096))
  h.update(read(size - MiB, MiB))
  return 's' + h.digest('hex')
`

type ReadAt = (offset: number, length: number) => Buffer
const signatureOf = new Function('size', 'read', 'createHash', SIGNATURE_BODY) as (
  size: number,
  read: ReadAt,
  hash: typeof createHash,
) => string

/** The signature of a content held in memory. */
export function signature(b: Buffer): string {
  return signatureOf(b.length, (o, n) => b.subarray(o, o + n), createHash)
}

// ------------------------------------------------------------------------------------------------
// The monitor

export interface Violation {
  path: string
  size: number
  signature: string
  /** when the monitor saw it (ISO time, to match the processes' logs) */
  at: string
  /** what the monitor knew about the path */
  known: number
}

export interface MonitorReport {
  polls: number
  /** files opened and checked (each new inode, size, mtime or ctime at a path is checked once) */
  checks: number
  violations: Violation[]
  /** for recorded paths: every distinct state seen, as size and sha256 of the whole file */
  observed: Record<string, Array<{ size: number; sha: string }>>
  /** longest time one poll took, ms */
  slowestPollMs: number
  /** states that were a prefix of a content being written in place (see expectRewrite) */
  prefixes?: number
}

const WORKER_SOURCE = `
const { parentPort, workerData, receiveMessageOnPort } = require('node:worker_threads')
const fs = require('node:fs')
const { createHash } = require('node:crypto')
const signatureOf = new Function('size', 'read', 'createHash', workerData.signatureBody)
const root = workerData.root
const port = workerData.port
const accepted = new Map()   // path -> Set of signatures
const recorded = new Map()   // path -> Map of key -> { size, sha }
const seen = new Map()       // path -> identity key last checked
const reported = new Set()
const violations = []
let polls = 0, checks = 0, slowest = 0, stopping = false

function drain() {
  for (let m; (m = receiveMessageOnPort(port)); ) {
    const msg = m.message
    if (msg.t === 'v') {
      let set = accepted.get(msg.path)
      if (!set) accepted.set(msg.path, (set = new Set()))
      set.add(msg.sig)
    } else if (msg.t === 'rec') {
      if (!recorded.has(msg.path)) recorded.set(msg.path, new Map())
    }
  }
}

function walk(dir, prefix, out) {
  let entries
  try { entries = fs.readdirSync(dir, { withFileTypes: true }) } catch { return }
  for (const e of entries) {
    if (!prefix && e.name === '.sfm') continue
    const rel = prefix ? prefix + '/' + e.name : e.name
    if (e.isDirectory()) walk(dir + '/' + e.name, rel, out)
    else if (e.isFile()) out.push(rel)
  }
}

function check(rel) {
  let fd
  try { fd = fs.openSync(root + '/' + rel, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW) } catch { return }
  try {
    const st = fs.fstatSync(fd, { bigint: true })
    if (!st.isFile()) return
    const key = st.ino + ':' + st.size + ':' + st.mtimeNs + ':' + st.ctimeNs
    if (seen.get(rel) === key) return
    seen.set(rel, key)
    checks++
    const size = Number(st.size)
    const read = (offset, length) => {
      const b = Buffer.allocUnsafe(length)
      let n = 0
      while (n < length) {
        const r = fs.readSync(fd, b, n, length - n, offset + n)
        if (r === 0) break
        n += r
      }
      return b.subarray(0, n)
    }
    const rec = recorded.get(rel)
    if (rec) {
      const sha = createHash('sha256').update(read(0, size)).digest('hex')
      rec.set(size + ':' + sha, { size, sha })
      return
    }
    const sig = signatureOf(size, read, createHash)
    const ok = () => (accepted.get(rel) || new Set()).has(sig)
    if (ok()) return
    drain()
    if (ok()) return
    if (recorded.has(rel)) return
    if (reported.has(rel + '|' + key)) return
    reported.add(rel + '|' + key)
    violations.push({ path: rel, size, signature: sig, at: new Date().toISOString(), known: (accepted.get(rel) || new Set()).size })
  } catch (err) {
    // the file went away while it was read (replaced by a rename): not a torn file
  } finally {
    fs.closeSync(fd)
  }
}

function report() {
  const observed = {}
  for (const [p, m] of recorded) observed[p] = [...m.values()]
  return { polls, checks, violations, observed, slowestPollMs: slowest }
}

parentPort.on('message', (m) => {
  if (m === 'stop') stopping = true
  else if (m === 'report') { drain(); parentPort.postMessage({ kind: 'report', report: report() }) }
})

function tick() {
  const t0 = Date.now()
  drain()
  const files = []
  walk(root, '', files)
  for (const f of files) check(f)
  polls++
  slowest = Math.max(slowest, Date.now() - t0)
  if (stopping) {
    parentPort.postMessage({ kind: 'final', report: report() })
    return
  }
  setTimeout(tick, workerData.intervalMs)
}
tick()
`

/**
 * Polls a mirror every `intervalMs` from a worker thread (so that a busy test thread does not stop it).
 * Every regular file at a final path must have a signature registered for that path with expect()
 * before the source was written; paths given to record() are only recorded, for checks at the end.
 */
export class MirrorMonitor {
  private readonly worker: Worker
  private readonly port: MessagePort
  private finished: Promise<MonitorReport> | null = null
  private readonly waiting: Array<(r: MonitorReport) => void> = []
  private final: ((r: MonitorReport) => void) | null = null
  private failed: Error | null = null
  private readonly rewrites = new Map<string, Array<{ size: number; make: () => Buffer }>>()

  constructor(t: { teardown(fn: () => unknown): void }, root: string, intervalMs = 10) {
    const { port1, port2 } = new MessageChannel()
    this.port = port1
    this.worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { root, port: port2, intervalMs, signatureBody: SIGNATURE_BODY },
      transferList: [port2],
    })
    this.worker.on('message', (m: { kind: string; report: MonitorReport }) => {
      if (m.kind === 'report') this.waiting.shift()?.(m.report)
      else if (m.kind === 'final') this.final?.(m.report)
    })
    this.worker.on('error', (err) => (this.failed = err))
    this.worker.unref()
    t.teardown(() => this.worker.terminate())
  }

  /** Accepts `content` at `path` (call before the source file gets it). */
  expect(path: string, content: Buffer): void {
    this.expectSignature(path, signature(content))
  }

  /**
   * Accepts `content` at `path`, the empty file, and every prefix of `content`: what the source passes
   * through while it is rewritten in place (truncate, then write). The kernel can stall a writer in the
   * middle of one write() (dirty-page throttling), long enough for a reader to find the same prefix
   * before and after it reads: a state the source really had, and no mixture of two versions. Prefixes
   * are judged in this thread, from `make` (called only for a state that is no whole version).
   */
  expectRewrite(path: string, size: number, make: () => Buffer): void {
    let list = this.rewrites.get(path)
    if (!list) this.rewrites.set(path, (list = []))
    list.push({ size, make })
    this.expectSignature(path, signature(Buffer.alloc(0)))
  }

  /** Drops the violations that are prefixes of a rewrite, and counts them. */
  private judgePrefixes(r: MonitorReport): MonitorReport {
    const violations: Violation[] = []
    let prefixes = 0
    for (const v of r.violations) {
      const rewrites = this.rewrites.get(v.path) ?? []
      if (rewrites.some((w) => w.size >= v.size && signature(w.make().subarray(0, v.size)) === v.signature)) prefixes++
      else violations.push(v)
    }
    return { ...r, violations, prefixes }
  }

  expectSignature(path: string, sig: string): void {
    this.port.postMessage({ t: 'v', path, sig })
  }

  /** Records every state of `path` instead of judging it. */
  record(path: string): void {
    this.port.postMessage({ t: 'rec', path })
  }

  /** What the monitor has seen so far. */
  report(): Promise<MonitorReport> {
    if (this.failed) throw this.failed
    return new Promise<MonitorReport>((resolve) => {
      this.waiting.push(resolve)
      this.worker.postMessage('report')
    }).then((r) => this.judgePrefixes(r))
  }

  /** Polls once more, stops, and returns everything it saw. */
  stop(): Promise<MonitorReport> {
    if (this.failed) throw this.failed
    this.finished ??= new Promise<MonitorReport>((resolve) => {
      this.final = resolve
      this.worker.postMessage('stop')
    }).then(async (r) => {
      await this.worker.terminate()
      return this.judgePrefixes(r)
    })
    return this.finished
  }
}

// ------------------------------------------------------------------------------------------------
// The data set

export interface DatasetOptions {
  bigFiles: number
  bigMinMiB: number
  bigMaxMiB: number
  smallDirs: number
  smallFiles: number
}

/**
 * A source folder with a few big files and a few hundred small ones in nested directories. Every
 * content it writes is registered with the monitor first. A file keeps its versions when it moves:
 * the mirror may show a file at its new path with an older content before the newer one arrives
 * (the server moves what it has, then receives the rest), or a file moved along with its directory
 * and deleted just before (the move is applied before the delete) - complete versions of that file,
 * never torn ones. So a rename makes every version the source path ever had acceptable at the target.
 */
export class Dataset {
  /** path -> signature of the current content, for regular files */
  private readonly files = new Map<string, string>()
  /** path -> every signature accepted there (kept after a delete: a move may still carry it) */
  private readonly history = new Map<string, Set<string>>()
  private readonly big = new Set<string>()
  private dirs: string[] = []
  private gen = 0
  /** one line per change since the last mutate() (not the initial content), for diagnostics */
  lastChanges: string[] = []

  constructor(
    readonly root: string,
    private readonly rng: Rng,
    private readonly monitor: MirrorMonitor,
    private readonly label: string,
    private readonly opts: DatasetOptions,
  ) {}

  get fileCount(): number {
    return this.files.size
  }

  bigPaths(): string[] {
    return [...this.big]
  }

  /** The initial content; returns its size in bytes. */
  create(): number {
    mkdirSync(this.root, { recursive: true })
    let bytes = 0
    mkdirSync(join(this.root, 'big'), { recursive: true })
    for (let i = 0; i < this.opts.bigFiles; i++) bytes += this.writeBig(`big/b${i}.bin`)
    for (let d = 0; d < this.opts.smallDirs; d++) {
      const dir = d % 3 === 0 ? `s/d${d}` : `s/d${d - (d % 3)}/e${d}`
      mkdirSync(join(this.root, dir), { recursive: true })
      this.addDir(dir)
    }
    mkdirSync(join(this.root, 'empty/dir'), { recursive: true })
    symlinkSync('../big/b0.bin', join(this.root, 's/link-to-big'))
    for (let i = 0; i < this.opts.smallFiles; i++) bytes += this.writeSmall(`${this.rng.pick(this.dirs)}/f${i}.txt`)
    this.lastChanges = []
    return bytes
  }

  /** One round of changes to everything: big files rewritten, edited, appended; small files too. */
  mutate(): number {
    this.lastChanges = []
    let bytes = 0
    const bigs = [...this.big]
    const [full, edit, append] = this.rng.sample(bigs, 3)
    if (full) bytes += this.writeBig(full)
    if (edit) bytes += this.editBig(edit)
    if (append) bytes += this.appendTo(append, this.rng.range(64 << 10, 4 * MiB))
    // now and then a new big file, or one fewer
    if (this.rng.chance(0.25) && this.big.size < this.opts.bigFiles + 2) bytes += this.writeBig(`big/n${++this.gen}.bin`)
    else if (this.rng.chance(0.2) && this.big.size > 2) this.remove(this.rng.pick([...this.big].filter((p) => p !== full)))
    bytes += this.mutateSmall(Math.max(10, Math.round(this.opts.smallFiles / 10)))
    return bytes
  }

  /** Changes to small files and directories only (about `n` of them). */
  mutateSmall(n: number): number {
    let bytes = 0
    const smalls = () => [...this.files.keys()].filter((p) => !this.big.has(p))
    for (const p of this.rng.sample(smalls(), Math.ceil(n / 2))) bytes += this.writeSmall(p)
    for (const p of this.rng.sample(smalls(), Math.ceil(n / 5))) bytes += this.appendTo(p, this.rng.range(1, 8192))
    for (const p of this.rng.sample(smalls(), Math.ceil(n / 5))) this.renameFile(p, `${this.rng.pick(this.dirs)}/r${++this.gen}.txt`)
    for (const p of this.rng.sample(smalls(), Math.ceil(n / 5))) this.remove(p)
    for (let i = 0; i < n; i++) bytes += this.writeSmall(`${this.rng.pick(this.dirs)}/c${++this.gen}.txt`)
    for (const p of this.rng.sample(smalls(), Math.ceil(n / 10))) {
      chmodSync(join(this.root, p), this.rng.pick([0o644, 0o600, 0o755, 0o640]))
      this.lastChanges.push(`chmod ${p}`)
    }
    for (const p of this.rng.sample(smalls(), Math.ceil(n / 10))) {
      const when = new Date(Date.now() - this.rng.range(0, 1e9))
      utimesSync(join(this.root, p), when, when)
      this.lastChanges.push(`touch ${p}`)
    }
    const movable = this.dirs.filter((d) => d.split('/').length === 2)
    if (this.rng.chance(0.3) && movable.length > 0) this.renameDir(this.rng.pick(movable), `s/m${++this.gen}`) // a whole directory moves
    if (this.rng.chance(0.3)) {
      const dir = `s/n${++this.gen}/deep`
      mkdirSync(join(this.root, dir), { recursive: true })
      this.addDir(`s/n${this.gen}`)
      this.addDir(dir)
      this.lastChanges.push(`mkdir ${dir}`)
      for (let i = 0; i < 5; i++) bytes += this.writeSmall(`${dir}/g${i}.txt`)
    }
    const deep = this.dirs.filter((d) => d.split('/').length >= 3)
    if (this.rng.chance(0.15) && deep.length > 2) this.removeDir(this.rng.pick(deep))
    return bytes
  }

  // --- single changes, each registered with the monitor before the source changes

  writeBig(path: string): number {
    const size = this.rng.range(this.opts.bigMinMiB * MiB, this.opts.bigMaxMiB * MiB)
    const label = `${this.label}:${path}:${++this.gen}`
    const content = seededBytes(label, size)
    this.expect(path, signature(content))
    this.expectRewrite(path, label, size)
    writeFileSync(join(this.root, path), content) // in place: truncate, then write
    this.files.set(path, signature(content))
    this.big.add(path)
    this.lastChanges.push(`write ${path} (${size} bytes)`)
    return size
  }

  /** Overwrites a few regions in place; every state in between is registered too. */
  editBig(path: string): number {
    const abs = join(this.root, path)
    const content = readFileSync(abs)
    const regions: Array<[number, Buffer]> = []
    for (let i = this.rng.range(1, 4); i > 0; i--) {
      const len = Math.min(content.length, this.rng.range(4096, 256 << 10))
      const at = this.rng.range(0, content.length - len)
      regions.push([at, seededBytes(`${this.label}:edit:${++this.gen}`, len)])
    }
    for (const [at, b] of regions) {
      b.copy(content, at)
      this.expect(path, signature(content))
    }
    const fd = openSync(abs, 'r+')
    try {
      for (const [at, b] of regions) writeSync(fd, b, 0, b.length, at)
    } finally {
      closeSync(fd)
    }
    this.files.set(path, signature(content))
    this.lastChanges.push(`edit ${path} at ${regions.map(([a, b]) => `${a}+${b.length}`).join(', ')}`)
    return regions.reduce((n, [, b]) => n + b.length, 0)
  }

  appendTo(path: string, n: number): number {
    const abs = join(this.root, path)
    const extra = seededBytes(`${this.label}:append:${++this.gen}`, n)
    const content = Buffer.concat([readFileSync(abs), extra])
    this.expect(path, signature(content))
    appendFileSync(abs, extra)
    this.files.set(path, signature(content))
    this.lastChanges.push(`append ${n} bytes to ${path}`)
    return n
  }

  writeSmall(path: string): number {
    const size = this.rng.chance(0.05) ? 0 : this.rng.range(1, 16384)
    const label = `${this.label}:${path}:${++this.gen}`
    const content = seededBytes(label, size)
    this.expect(path, signature(content))
    this.expectRewrite(path, label, size)
    writeFileSync(join(this.root, path), content)
    this.files.set(path, signature(content))
    this.lastChanges.push(`write ${path} (${size} bytes)`)
    return size
  }

  renameFile(from: string, to: string): void {
    const sig = this.files.get(from)!
    this.carry(from, to)
    renameSync(join(this.root, from), join(this.root, to))
    this.files.delete(from)
    this.files.set(to, sig)
    this.lastChanges.push(`rename ${from} -> ${to}`)
  }

  renameDir(from: string, to: string): void {
    const moved = [...this.files].filter(([p]) => p.startsWith(from + '/'))
    for (const p of [...this.history.keys()]) if (p.startsWith(from + '/')) this.carry(p, to + p.slice(from.length))
    renameSync(join(this.root, from), join(this.root, to))
    for (const [p, sig] of moved) {
      this.files.delete(p)
      this.files.set(to + p.slice(from.length), sig)
    }
    this.dirs = this.dirs.map((d) => (d === from || d.startsWith(from + '/') ? to + d.slice(from.length) : d))
    this.lastChanges.push(`rename dir ${from} -> ${to} (${moved.length} files)`)
  }

  /**
   * An existing `path` is rewritten in place: its empty state and the prefixes of `label`'s content
   * are states the source passes through (see MirrorMonitor.expectRewrite).
   */
  private expectRewrite(path: string, label: string, size: number): void {
    if (this.files.has(path)) this.monitor.expectRewrite(path, size, () => seededBytes(label, size))
  }

  /** Accepts `sig` at `path` from now on (call before the source file gets that content). */
  private expect(path: string, sig: string): void {
    let set = this.history.get(path)
    if (!set) this.history.set(path, (set = new Set()))
    set.add(sig)
    this.monitor.expectSignature(path, sig)
  }

  /** Every version `from` ever had is acceptable at `to`. */
  private carry(from: string, to: string): void {
    for (const sig of this.history.get(from) ?? []) this.expect(to, sig)
  }

  remove(path: string): void {
    rmSync(join(this.root, path))
    this.files.delete(path)
    this.big.delete(path)
    this.lastChanges.push(`delete ${path}`)
  }

  removeDir(dir: string): void {
    rmSync(join(this.root, dir), { recursive: true })
    for (const p of [...this.files.keys()]) if (p.startsWith(dir + '/')) this.files.delete(p)
    this.dirs = this.dirs.filter((d) => d !== dir && !d.startsWith(dir + '/'))
    this.lastChanges.push(`delete dir ${dir}`)
  }

  private addDir(dir: string): void {
    if (!this.dirs.includes(dir)) this.dirs.push(dir)
  }
}

// ------------------------------------------------------------------------------------------------
// Comparing folders cheaply

/** The first difference in kind, mode, size, mtime or symlink target between two folders, or null. */
export function quickDifference(src: string, mirror: string): string | null {
  try {
    return firstDifference(describeTree(src, { content: false }), describeTree(mirror, { content: false }))
  } catch (err) {
    return String(err) // something vanished while it was read
  }
}

/**
 * Waits for the cheap comparison to agree, then for the exact one (waitForMirror, content included).
 * `broken` is asked on every poll: a reason (a process that died) ends the wait at once.
 */
export async function waitConverged(src: string, mirror: string, ms: number, broken: () => string | null = () => null): Promise<void> {
  let diff: string | null = 'not compared yet'
  await waitUntil(
    () => {
      const why = broken()
      if (why !== null) throw new Error(why)
      return (diff = quickDifference(src, mirror)) === null
    },
    ms,
    () => `mirror differs: ${diff}`,
  )
  await waitForMirror(src, mirror, 30_000)
}

/** The entries in the server's temporary folder (uploads in progress, or leftovers). */
export function tmpEntries(mirror: string): string[] {
  const dir = join(mirror, '.sfm/tmp')
  return existsSync(dir) ? readdirSync(dir) : []
}

/** The last `n` lines of a process's output, for diagnostics. */
export function tail(text: string, n = 40): string {
  const lines = text.trimEnd().split('\n')
  return (lines.length > n ? [`... (${lines.length - n} lines before)`, ...lines.slice(-n)] : lines).join('\n')
}
