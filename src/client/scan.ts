// Reads the client's folder into LocalEntry records keyed by wire path, never following a symlink.
import { type BigIntStats, constants as fsc, lstat, readdir, readlink } from 'node:fs'
import { lstat as lstatAsync, readlink as readlinkAsync, stat as statAsync } from 'node:fs/promises'
import { constants as osc } from 'node:os'
import { resolve } from 'node:path'
import { errnoError } from '../fs/folder-addon.js'
import { type EntryStat, type ListedEntry, listDirFunction } from '../fs/list-dir.js'
import { MAX_PATH_BYTES } from '../protocol/constants.js'
import { RESERVED_NAME, checkWirePath, describePath, joinWire, nameProblem } from '../protocol/paths.js'

export type EntryKind = 'file' | 'dir' | 'symlink'

export interface LocalEntry {
  kind: EntryKind
  mode: number // st_mode & 0o7777
  mtimeNs: bigint
  size: number
  ino: bigint
  ctimeNs: bigint
  target?: string // symlinks only: the link text, never resolved
  // Directories only: set when the directory could not be listed (a warning said so). Its contents are
  // unknown, not absent: a caller must not take their absence from the map as a deletion.
  unreadable?: true
}

export interface ScanOptions {
  under?: string // a wire path: scan only this entry and what is below it
  onWarning: (msg: string) => void
  // Called after lstat for each entry; true leaves the entry (and for a directory, its subtree) out. It is
  // also asked about a top-level ".sfm" (isDir true): true skips it without the warning.
  isIgnored?: (wirePath: string, isDir: boolean) => boolean
  concurrency?: number // file system calls in flight; SCAN_CONCURRENCY by default
}

export interface StatOptions {
  onWarning?: (msg: string) => void
}

// dev and ino alone do not tell a replaced root apart: ext4 hands a removed directory's inode number to the
// next mkdir, often at once. The birth time does (0n where the file system keeps none).
export interface RootIdentity {
  dev: bigint
  ino: bigint
  birthtimeNs: bigint
}

export function sameRoot(a: RootIdentity, b: RootIdentity): boolean {
  return a.dev === b.dev && a.ino === b.ino && a.birthtimeNs === b.birthtimeNs
}

export type RootGoneError = Error & { code: 'SFM_ROOT_GONE' }

// 64 calls in flight keep the kernel's dentry and inode caches busy without flooding libuv's thread pool
// (4 threads by default): more than that only lengthens the queue.
export const SCAN_CONCURRENCY = 64

export function rootGoneError(root: string, detail: string): RootGoneError {
  const err = new Error(`the folder ${describePath(root)} ${detail}`) as RootGoneError
  err.code = 'SFM_ROOT_GONE'
  return err
}

// The identity of the folder being mirrored. `root` itself may be a symlink to it (the user named it so);
// everything below it is taken as it is.
export async function rootIdentity(root: string): Promise<RootIdentity> {
  let st: BigIntStats
  try {
    st = await statAsync(root, { bigint: true })
  } catch (err) {
    if (isVanished(err)) throw rootGoneError(root, 'does not exist')
    throw err
  }
  if (!st.isDirectory()) throw rootGoneError(root, 'is not a directory')
  return { dev: st.dev, ino: st.ino, birthtimeNs: st.birthtimeNs }
}

export async function scanTree(root: string, opts: ScanOptions): Promise<Map<string, LocalEntry>> {
  const scan = new Scan(resolve(root), opts)
  const before = await rootIdentity(scan.root)
  const under = opts.under
  if (under === undefined) {
    await scan.run(undefined)
  } else {
    checkWirePath(under) // a caller bug otherwise
    if (!isIgnoredBelow(under, opts.isIgnored) && (await parentsAreDirs(scan.root, under))) await scan.run(under)
  }
  // A root removed or replaced during the walk reads as an empty or partial tree. Say so rather than
  // return a map that would make the caller delete the mirror.
  const after = await rootIdentity(scan.root)
  if (!sameRoot(before, after)) throw rootGoneError(scan.root, 'was replaced during the scan')
  return scan.entries
}

// One entry. Null when it is absent, below a symlink or a non-directory, or not a kind sfm mirrors (with a
// warning through opts.onWarning). Throws SFM_ROOT_GONE when it is absent because the root is gone.
export async function statEntry(root: string, wirePath: string, opts: StatOptions = {}): Promise<LocalEntry | null> {
  checkWirePath(wirePath)
  const rootPath = resolve(root)
  const warn = opts.onWarning ?? (() => {})
  // lstat follows symlinks in every component but the last: a path below a symlinked directory would name
  // something outside the folder, which the scan never shows either.
  if (!(await parentsAreDirs(rootPath, wirePath))) {
    await rootIdentity(rootPath)
    return null
  }
  const path = `${rootPath}/${wirePath}`
  let st: BigIntStats
  try {
    st = await lstatAsync(path, { bigint: true })
  } catch (err) {
    // A valid wire path below a long root can still pass PATH_MAX: the scan skips it the same way.
    if ((err as NodeJS.ErrnoException).code === 'ENAMETOOLONG') {
      warn(`skipping ${describePath(wirePath)}: ${errorText(err)}`)
      return null
    }
    if (!isVanished(err)) throw err
    await rootIdentity(rootPath)
    return null
  }
  const stat = statOf(st, path)
  if (stat instanceof Error) {
    warn(`skipping ${describePath(wirePath)}: ${errorText(stat)}`)
    return null
  }
  return toEntry(path, wirePath, stat, warn)
}

// The walk runs on fs callbacks rather than fs.promises: with 64 calls in flight, a promise per call costs
// about three times the lstat itself (20,000 lstats: 40 ms with callbacks, 130 ms with promises). With the
// addon, each directory is listed and its entries lstat'ed in one call (src/fs/list-dir.ts), which costs
// a third of that again.
type Op = () => void

const listDir = listDirFunction()
/** Linux's limit for a path given to a system call, with its terminating NUL. */
const PATH_MAX = 4096

class Scan {
  readonly entries = new Map<string, LocalEntry>()
  readonly root: string
  private readonly opts: ScanOptions
  private readonly limit: number
  private inFlight = 0
  private outstanding = 0 // calls queued or in flight
  private readonly waiting: Op[] = [] // a stack: depth first keeps it short
  private failure: { error: unknown } | null = null
  private rootError: unknown = null
  private settle: (() => void) | null = null

  constructor(root: string, opts: ScanOptions) {
    this.root = root
    this.opts = opts
    this.limit = Math.max(1, opts.concurrency ?? SCAN_CONCURRENCY)
  }

  // Walks the whole root (under === undefined) or `under` and what is below it.
  async run(under: string | undefined): Promise<void> {
    await new Promise<void>(resolve => {
      this.settle = resolve
      if (under === undefined) this.list(null, null)
      else this.stat(under)
    })
    if (this.failure) throw this.failure.error
    if (this.rootError !== null) {
      await rootIdentity(this.root) // throws SFM_ROOT_GONE when that is why
      throw this.rootError
    }
  }

  // Starts `op` now or when a slot frees. Every op ends in exactly one finish().
  private schedule(op: Op): void {
    this.outstanding++
    if (this.inFlight < this.limit) {
      this.inFlight++
      op()
    } else {
      this.waiting.push(op)
    }
  }

  // Runs one fs callback's work, then hands its slot on. An exception (from onWarning or isIgnored, say)
  // fails the scan instead of escaping as an uncaught exception.
  private finish(work: () => void): void {
    try {
      if (!this.failure) work()
    } catch (error) {
      this.failure = { error }
    }
    this.outstanding--
    const next = this.waiting.pop()
    if (next) next()
    else this.inFlight--
    if (this.outstanding === 0) this.settle?.()
  }

  private stat(wire: string): void {
    const path = `${this.root}/${wire}`
    this.schedule(() =>
      lstat(path, { bigint: true }, (err, st) =>
        this.finish(() => {
          this.found(wire, path, err ?? statOf(st, path))
        }),
      ),
    )
  }

  // What lstat said of `wire`: an entry, a directory to list, a link to read, or a warning.
  private found(wire: string, path: string, st: EntryStat | NodeJS.ErrnoException): void {
    if (st instanceof Error) {
      // Gone between readdir and lstat: it is simply not there.
      if (!isVanished(st)) this.opts.onWarning(`skipping ${describePath(wire)}: ${errorText(st)}`)
      return
    }
    const type = st.mode & fsc.S_IFMT
    if (this.opts.isIgnored?.(wire, type === fsc.S_IFDIR)) return
    if (type === fsc.S_IFREG) {
      this.entries.set(wire, entryOf('file', st))
    } else if (type === fsc.S_IFDIR) {
      const entry = entryOf('dir', st)
      this.entries.set(wire, entry)
      this.list(wire, entry)
    } else if (type === fsc.S_IFLNK) {
      this.readTarget(wire, path, st)
    } else {
      this.opts.onWarning(`skipping ${describePath(wire)}: ${specialKind(st.mode)} is not mirrored`)
    }
  }

  private readTarget(wire: string, path: string, st: EntryStat): void {
    this.schedule(() =>
      readlink(path, { encoding: 'buffer' }, (err, bytes) =>
        this.finish(() => {
          if (err) {
            if (!isReplaced(err)) this.opts.onWarning(`skipping ${describePath(wire)}: ${errorText(err)}`)
            return
          }
          const target = targetOf(bytes, wire, this.opts.onWarning)
          if (target !== null) this.entries.set(wire, entryOf('symlink', st, target))
        }),
      ),
    )
  }

  // Lists `dir` (null: the root) and stats each name that can be a wire path.
  private list(dir: string | null, entry: LocalEntry | null): void {
    const path = dir === null ? this.root : `${this.root}/${dir}`
    if (listDir !== null) return this.listNative(dir, entry, path, listDir)
    this.schedule(() =>
      readdir(path, (err, names) =>
        this.finish(() => {
          if (err) return this.listFailed(dir, entry, err)
          // Node decodes bytes that are not UTF-8 to U+FFFD, which a name may also contain for real. Only
          // then is it worth reading the raw bytes to tell the two apart.
          if (names.some(name => name.includes('\uFFFD'))) this.listRaw(dir, entry, path)
          else this.statNames(dir, names)
        }),
      ),
    )
  }

  private listRaw(dir: string | null, entry: LocalEntry | null, path: string): void {
    this.schedule(() =>
      readdir(path, { encoding: 'buffer' }, (err, raw) =>
        this.finish(() => {
          if (err) return this.listFailed(dir, entry, err)
          const names: string[] = []
          for (const bytes of raw) {
            const name = bytes.toString('utf8')
            if (this.validName(dir, name, bytes)) names.push(name)
          }
          this.statNames(dir, names)
        }),
      ),
    )
  }

  // The root is followed if it is a symlink (the user named it so); a directory below it never is: one
  // replaced by a symlink since its lstat fails with ELOOP, a change the watcher reports.
  private listNative(dir: string | null, entry: LocalEntry | null, path: string, list: NonNullable<typeof listDir>): void {
    this.schedule(() => {
      list(path, { noFollow: dir !== null }).then(
        listed => this.finish(() => this.foundAll(dir, path, listed)),
        (err: NodeJS.ErrnoException) => this.finish(() => this.listFailed(dir, entry, err)),
      )
    })
  }

  private foundAll(dir: string | null, path: string, listed: ListedEntry[]): void {
    for (const { name, rawName, stat } of listed) {
      if (rawName !== null && !this.validName(dir, name, rawName)) continue
      const wire = this.sendableWire(dir, name)
      if (wire === null) continue
      const entryPath = `${path}/${name}`
      // fstatat reaches entries whose full path lstat could not; treat them as lstat would, as statEntry does
      if (entryPath.length * 3 >= PATH_MAX && Buffer.byteLength(entryPath, 'utf8') >= PATH_MAX) {
        this.found(wire, entryPath, Object.assign(new Error('path too long'), { code: 'ENAMETOOLONG', syscall: 'lstat' }))
      } else {
        this.found(wire, entryPath, stat)
      }
    }
  }

  // False (with a warning) when `bytes`, a name as read from the directory, are not valid UTF-8.
  private validName(dir: string | null, name: string, bytes: Buffer): boolean {
    if (decodedExactly(name, bytes)) return true
    this.opts.onWarning(`skipping ${describePath(joinWire(dir, name))}: the name is not valid UTF-8 (bytes ${hexOf(bytes)})`)
    return false
  }

  private listFailed(dir: string | null, entry: LocalEntry | null, err: NodeJS.ErrnoException): void {
    if (dir === null) {
      this.rootError = err
    } else if (!isVanished(err) && err.code !== 'ELOOP') {
      // Removed or replaced by a file since its lstat is no news: the watcher reports that change.
      this.opts.onWarning(`cannot list ${describePath(dir)}: ${errorText(err)}; its contents are left as they are`)
      if (entry) entry.unreadable = true
    }
  }

  // A stat for each name that can be a wire path.
  private statNames(dir: string | null, names: string[]): void {
    for (const name of names) {
      const wire = this.sendableWire(dir, name)
      if (wire !== null) this.stat(wire)
    }
  }

  // The wire path of `name` in `dir`, or null (with a warning) when it cannot be one.
  private sendableWire(dir: string | null, name: string): string | null {
    const wire = joinWire(dir, name)
    if (dir === null && name === RESERVED_NAME) {
      // A caller that expects it (the server scanning its own mirror) says so through isIgnored.
      if (!this.opts.isIgnored?.(wire, true)) {
        this.opts.onWarning(`skipping ${describePath(wire)}: the name is reserved for the server's own state`)
      }
      return null
    }
    const problem = nameProblem(name)
    if (problem !== null) {
      this.opts.onWarning(`skipping ${describePath(wire)}: the name cannot be sent (${problem})`)
      return null
    }
    // [M-PATH-1] counts bytes; a path of fewer than MAX_PATH_BYTES / 3 UTF-16 units always fits.
    if (wire.length * 3 > MAX_PATH_BYTES && Buffer.byteLength(wire, 'utf8') > MAX_PATH_BYTES) {
      this.opts.onWarning(`skipping ${describePath(wire)}: the path is longer than ${MAX_PATH_BYTES} bytes`)
      return null
    }
    return wire
  }
}

// The LocalEntry for what lstat found at `path`, or null (with a warning) for a kind sfm does not mirror.
async function toEntry(path: string, wire: string, st: EntryStat, warn: (msg: string) => void): Promise<LocalEntry | null> {
  const type = st.mode & fsc.S_IFMT
  if (type === fsc.S_IFREG) return entryOf('file', st)
  if (type === fsc.S_IFDIR) return entryOf('dir', st)
  if (type !== fsc.S_IFLNK) {
    warn(`skipping ${describePath(wire)}: ${specialKind(st.mode)} is not mirrored`)
    return null
  }
  let bytes: Buffer
  try {
    bytes = await readlinkAsync(path, { encoding: 'buffer' })
  } catch (err) {
    if (isReplaced(err)) return null
    throw err
  }
  const target = targetOf(bytes, wire, warn)
  return target === null ? null : entryOf('symlink', st, target)
}

// A symlink's target as a string, or null (with a warning) when it cannot be sent [M-SYMLINK-1].
function targetOf(bytes: Buffer, wire: string, warn: (msg: string) => void): string | null {
  const target = bytes.toString('utf8')
  if (!decodedExactly(target, bytes)) {
    warn(`skipping symlink ${describePath(wire)}: its target is not valid UTF-8 (bytes ${hexOf(bytes)})`)
    return null
  }
  // Linux cannot make a longer one; other systems might.
  if (bytes.length > MAX_PATH_BYTES) {
    warn(`skipping symlink ${describePath(wire)}: its target is longer than ${MAX_PATH_BYTES} bytes`)
    return null
  }
  return target
}

// Node decodes bytes that are not UTF-8 to U+FFFD, which a name may also contain for real: only then
// do the bytes need a second look.
function decodedExactly(text: string, bytes: Buffer): boolean {
  return !text.includes('\uFFFD') || Buffer.from(text, 'utf8').equals(bytes)
}

const I64_MIN = -(2n ** 63n)
const I64_MAX = 2n ** 63n - 1n

/**
 * What the scan keeps of an lstat, or EOVERFLOW (as the folder addon reports it) for a time outside
 * int64 nanoseconds, 1678 to 2262: mtime_ns on the wire could not carry it (PROTOCOL.md 3.4).
 */
function statOf(st: BigIntStats, path: string): EntryStat | NodeJS.ErrnoException {
  for (const ns of [st.mtimeNs, st.ctimeNs]) {
    if (ns < I64_MIN || ns > I64_MAX) return errnoError(osc.errno.EOVERFLOW, 'lstat', path)
  }
  return { mode: Number(st.mode), size: Number(st.size), ino: st.ino, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs }
}

function entryOf(kind: EntryKind, st: EntryStat, target?: string): LocalEntry {
  const entry: LocalEntry = {
    kind,
    mode: st.mode & 0o7777,
    mtimeNs: st.mtimeNs,
    size: st.size,
    ino: st.ino,
    ctimeNs: st.ctimeNs,
  }
  if (target !== undefined) entry.target = target
  return entry
}

function specialKind(mode: number): string {
  switch (mode & fsc.S_IFMT) {
    case fsc.S_IFIFO: return 'a FIFO'
    case fsc.S_IFSOCK: return 'a socket'
    case fsc.S_IFCHR: return 'a character device'
    case fsc.S_IFBLK: return 'a block device'
    /* c8 ignore next 2 */
    default: return 'an entry of unknown type'
  }
}

// True when every directory on the way to `wire` is a real directory below `root` (lstat: not a symlink).
async function parentsAreDirs(root: string, wire: string): Promise<boolean> {
  const parents: string[] = []
  for (let slash = wire.indexOf('/'); slash !== -1; slash = wire.indexOf('/', slash + 1)) {
    parents.push(wire.slice(0, slash))
  }
  const found = await Promise.all(
    parents.map(parent =>
      lstatAsync(`${root}/${parent}`, { bigint: true }).then(
        st => st.isDirectory(),
        err => {
          if (isVanished(err) || (err as NodeJS.ErrnoException).code === 'ENAMETOOLONG') return false
          throw err
        },
      ),
    ),
  )
  return found.every(Boolean)
}

function isIgnoredBelow(wire: string, isIgnored: ScanOptions['isIgnored']): boolean {
  if (!isIgnored) return false
  for (let slash = wire.indexOf('/'); slash !== -1; slash = wire.indexOf('/', slash + 1)) {
    if (isIgnored(wire.slice(0, slash), true)) return true
  }
  return false
}

function isVanished(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code
  return code === 'ENOENT' || code === 'ENOTDIR'
}

// EINVAL from readlink: no longer a symlink. Like a vanished entry, the watcher reports the change.
function isReplaced(err: unknown): boolean {
  return isVanished(err) || (err as NodeJS.ErrnoException).code === 'EINVAL'
}

function errorText(err: unknown): string {
  const e = err as NodeJS.ErrnoException
  return e.code ? `${e.syscall ?? 'access'} failed (${e.code})` : String(e.message ?? e)
}

function hexOf(bytes: Buffer): string {
  const MAX_SHOWN = 32
  const hex = bytes.subarray(0, MAX_SHOWN).toString('hex').replace(/(..)(?!$)/g, '$1 ')
  return bytes.length > MAX_SHOWN ? `${hex} …` : hex
}
