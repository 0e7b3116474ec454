// Prompt hints for the directories where changes are happening now, to add to @parcel/watcher's.
//
// Why: the library holds each batch until no event has come for 50 ms, and every event restarts that
// timer (it only gives up waiting 500 ms after its previous report). So a directory written to every
// 50 ms or so is reported only at a pause: 150 to 300 ms after a change, measured in benchmark W9.
// Node's fs.watch hands over each inotify event as soon as the event loop reads it. One such watch on
// each directory that changed lately (a few, not one per directory) brings the report down to a few ms.
//
// The library's batches stay the source of truth: it watches every directory, new ones included, and
// every event seen here is in its batches too (its inotify mask is libuv's). So a hint may be dropped
// here, with one exception. The library leaves out of a batch an entry created and deleted within it.
// Once a hint here made the caller look at the folder ahead of the library, such an entry may be on the
// mirror already, and only this lane would report that it went. Hence:
// - an event that may be a delete ('rename': created, deleted or moved) is never dropped;
// - a watched directory is given up only after it has been quiet for longer than a library batch can
//   last, or when it is gone or replaced (what it held is gone with it).
import { lstat } from 'node:fs/promises'
import { type BigIntStats, lstatSync, watch, type FSWatcher } from 'node:fs'
import { isSameOrBelow } from '../protocol/paths.js'

/** Directories watched at once; each costs one inotify watch on top of the library's. */
export const MAX_HOT_DIRS = 32
/** A directory without an event for this long is no longer watched here. */
export const HOT_IDLE_MS = 60_000
/**
 * A busy directory is given up for a new one only after this long without an event. The library
 * reports at least every 500 ms, so by then none of its batches holds an event from that directory.
 */
const SAFE_EVICT_MS = 2_000
/**
 * Content changes ('change') of one path are hinted at most this often per window; the rest are left
 * to the library. A file appended to all the time would otherwise be read again after every write.
 */
const CHANGES_PER_PATH = 3
const CHANGE_WINDOW_MS = 1_000
/** Bound on the paths counted for the above (a flood of new names only resets the counts). */
const MAX_COUNTED_PATHS = 10_000

export interface HotDirsOptions {
  /** Whether a wire path may be reported at all (valid, not ignored). */
  accepts: (wire: string) => boolean
  /** A hint: `wire` may have changed; `maybeGone` when the event may be its delete. */
  onHint: (wire: string, maybeGone: boolean) => void
  maxDirs?: number
  idleMs?: number
}

interface HotDir {
  watcher: FSWatcher
  // The directory watched. ext4 gives a removed directory's inode number to the next mkdir, often at
  // once: the birth time tells them apart.
  ino: bigint
  birthtimeNs: bigint
  lastEventAt: number
}

export class HotDirs {
  private readonly dirs = new Map<string, HotDir>()
  private readonly starting = new Set<string>()
  private readonly changes = new Map<string, { since: number; count: number }>()
  private readonly sweeper: NodeJS.Timeout
  private readonly maxDirs: number
  private readonly idleMs: number
  private closed = false

  constructor(
    private readonly root: string,
    private readonly opts: HotDirsOptions,
  ) {
    this.maxDirs = opts.maxDirs ?? MAX_HOT_DIRS
    this.idleMs = opts.idleMs ?? HOT_IDLE_MS
    this.sweeper = setInterval(() => this.sweep(), Math.max(100, this.idleMs / 4))
    this.sweeper.unref()
  }

  /** The wire paths of the directories watched now ('' is the root). */
  watched(): string[] {
    return [...this.dirs.keys()]
  }

  /** Something changed in `dir` (a wire path, '' for the root): watch it from now on. */
  touch(dir: string): void {
    const hot = this.dirs.get(dir)
    if (hot) {
      hot.lastEventAt = Date.now()
      return
    }
    if (this.closed || this.starting.has(dir)) return
    this.starting.add(dir)
    void this.start(dir).finally(() => this.starting.delete(dir))
  }

  /**
   * `path` itself was reported (deleted, replaced, its attributes): the watches on it and below are
   * dropped unless each is still on the directory found at its path.
   */
  async recheck(path: string): Promise<void> {
    for (const [dir, hot] of [...this.dirs]) {
      if (dir === '' || !isSameOrBelow(dir, path)) continue
      const st = await lstat(this.absolute(dir), { bigint: true }).catch(() => null)
      if (!(st?.isDirectory() && st.ino === hot.ino && st.birthtimeNs === hot.birthtimeNs)) this.drop(dir, hot)
    }
  }

  close(): void {
    this.closed = true
    clearInterval(this.sweeper)
    for (const [dir, hot] of [...this.dirs]) this.drop(dir, hot)
    this.changes.clear()
  }

  private async start(dir: string): Promise<void> {
    const path = this.absolute(dir)
    if (!(await lstat(path).catch(() => null))?.isDirectory() || this.closed || this.dirs.has(dir)) return
    if (this.dirs.size >= this.maxDirs && !this.evictOne()) return // all busy: the library alone reports this one
    let watcher: FSWatcher
    try {
      watcher = watch(path, { persistent: false }, (event, name) => this.onEvent(dir, event, name))
    } catch {
      return // gone meanwhile, or no inotify watch left: the library still reports this directory
    }
    // The inode watched is the one at the path right after the watch was added (not before: it may
    // have been replaced in between, and recheck compares with this).
    let st: BigIntStats | null = null
    try {
      st = lstatSync(path, { bigint: true })
    } catch {
      // gone: closed below
    }
    if (!st?.isDirectory()) {
      watcher.close()
      return
    }
    watcher.on('error', () => this.drop(dir, this.dirs.get(dir)))
    this.dirs.set(dir, { watcher, ino: st.ino, birthtimeNs: st.birthtimeNs, lastEventAt: Date.now() })
  }

  private onEvent(dir: string, event: string, name: string | Buffer | null): void {
    const hot = this.dirs.get(dir)
    // Without a name (not on Linux) there is nothing precise to hint: the library reports it.
    if (this.closed || !hot || typeof name !== 'string') return
    const now = Date.now()
    hot.lastEventAt = now
    // The watched directory's own delete or move arrives under its own name, as if it were a child of
    // itself: a hint for a path that does not exist, which costs a look and nothing else.
    const wire = dir === '' ? name : `${dir}/${name}`
    if (!this.opts.accepts(wire)) return
    const maybeGone = event === 'rename'
    if (!maybeGone && !this.mayHintChange(wire, now)) return
    this.opts.onHint(wire, maybeGone)
  }

  private mayHintChange(wire: string, now: number): boolean {
    let seen = this.changes.get(wire)
    if (!seen || now - seen.since >= CHANGE_WINDOW_MS) {
      if (!seen && this.changes.size >= MAX_COUNTED_PATHS) this.changes.clear()
      seen = { since: now, count: 0 }
      this.changes.set(wire, seen)
    }
    return ++seen.count <= CHANGES_PER_PATH
  }

  // Gives up the directory quiet for longest, if it has been quiet long enough to be safe.
  private evictOne(): boolean {
    let oldest: [string, HotDir] | null = null
    for (const entry of this.dirs) if (!oldest || entry[1].lastEventAt < oldest[1].lastEventAt) oldest = entry
    if (!oldest || Date.now() - oldest[1].lastEventAt < SAFE_EVICT_MS) return false
    this.drop(...oldest)
    return true
  }

  private sweep(): void {
    const now = Date.now()
    for (const [dir, hot] of [...this.dirs]) if (now - hot.lastEventAt >= this.idleMs) this.drop(dir, hot)
    for (const [wire, seen] of [...this.changes]) if (now - seen.since >= CHANGE_WINDOW_MS) this.changes.delete(wire)
  }

  private drop(dir: string, hot: HotDir | undefined): void {
    if (!hot || this.dirs.get(dir) !== hot) return
    this.dirs.delete(dir)
    hot.watcher.close()
  }

  private absolute(dir: string): string {
    return dir === '' ? this.root : `${this.root}/${dir}`
  }
}
