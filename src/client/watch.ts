// Turns @parcel/watcher events below the client's folder into "these wire paths may have changed" hints,
// and patches the gaps that the library leaves on Linux (see the notes at each workaround). Directories
// that changed lately also give prompt hints of their own (hot-dirs.ts): the library's batches can be
// hundreds of ms late.
import { lstat, readdir, readFile, realpath } from 'node:fs/promises'
import { closeSync, openSync, watch as fsWatch } from 'node:fs'
import { Worker } from 'node:worker_threads'
import watcher from '@parcel/watcher'
import { HotDirs } from './hot-dirs.js'
import { type RootIdentity, rootIdentity, sameRoot } from './scan.js'
import { RESERVED_NAME, checkWirePath, describePath, isSameOrBelow, isValidWirePath, parentOf } from '../protocol/paths.js'

export type WatchErrorCode = 'SFM_WATCH_LIMIT' | 'SFM_ROOT_GONE' | 'SFM_WATCH_FAILED'

export class WatchError extends Error {
  readonly code: WatchErrorCode
  constructor(code: WatchErrorCode, message: string) {
    super(message)
    this.name = 'WatchError'
    this.code = code
  }
}

export interface WatchOptions {
  ignore?: string[] // wire paths whose subtrees are neither watched nor reported
  rootCheckMs?: number // how often the root's identity is checked without events; ROOT_CHECK_MS by default
}

export interface FolderWatch {
  close(): Promise<void>
}

// Unmounting the folder, or renaming one of its parents, produces no event at all, so the root is also
// checked on a timer: one stat a second.
export const ROOT_CHECK_MS = 1_000
// A subscribe that meets a directory vanishing under its walk fails; it is tried this many times.
const SUBSCRIBE_ATTEMPTS = 3
const INSPECT_CONCURRENCY = 16
const PREFLIGHT_TIMEOUT_MS = 5_000
const FD_HEADROOM = 16
// The library reports the first event of a burst at once, alone. When a batch deletes more than a few
// entries, the report waits this long and then checks the root: `rm -rf` of the whole folder has usually
// finished by then, and the caller gets SFM_ROOT_GONE instead of deletions to mirror. A batch of one or
// two deletes (someone deleting a file) is reported at once: waiting would only add latency.
const DELETE_GRACE_MS = 100
const QUICK_DELETES = 2
// Hints from the directories watched by HotDirs (see hot-dirs.ts) are gathered this long, so that the
// events of one write (create, then modify) usually make one report...
const HINT_GATHER_MS = 3
// ...and a burst of them makes at most one report per this many ms.
const HINT_REPORT_GAP_MS = 25
// A hinted path found gone is held this long first: a mass delete (`rm -rf`) shows itself by more
// deletes meanwhile, and then its deletes go with the library's next batch, counted and delayed as
// that batch's own (DELETE_GRACE_MS). What would be its first delete or two, alone, is not held back.
const DELETE_GATHER_MS = 15
// Held deletes go anyway when no batch of the library came for this long: the library leaves out an
// entry created and deleted within one batch. It reports at least every 500 ms while events come.
const LIBRARY_BATCH_WAIT_MS = 1_000
// A delete that a hint reported is not counted again when the library's batch repeats it within this
// long.
const HINTED_GONE_MS = 2_000

type Subscription = watcher.AsyncSubscription
type Callback = watcher.SubscribeCallback

// Watches `root` until close() or the first error. After onError has been called once, nothing more is
// reported and close() only tidies up. onChange gets wire paths, each meaning "this path, and everything
// below it if it is a directory, may have changed"; the event types are not trusted beyond that.
// Rejects with a WatchError when the watch cannot start.
export async function watchFolder(
  root: string,
  onChange: (paths: string[]) => void,
  onError: (err: WatchError) => void,
  opts: WatchOptions = {},
): Promise<FolderWatch> {
  let realRoot: string
  try {
    realRoot = await realpath(root)
  } catch (err) {
    const code = codeOf(err)
    if (code === 'ENOENT' || code === 'ENOTDIR') throw rootGone(root, 'does not exist')
    throw new WatchError('SFM_WATCH_FAILED', `cannot watch ${describePath(root)}: ${code ?? String(err)}`)
  }
  const identity = await identityOf(realRoot)
  if (identity === null) throw rootGone(root, 'is not a directory')
  for (const path of opts.ignore ?? []) checkWirePath(path)
  await preflight(realRoot)
  const folder = new Watch(realRoot, identity, onChange, onError, opts)
  await folder.start()
  return { close: () => folder.close() }
}

interface Cover {
  subscription: Subscription
  ino: bigint
  ctimeNs: bigint
}

class Watch {
  private readonly root: string
  private readonly identity: RootIdentity
  private readonly onChange: (paths: string[]) => void
  private readonly onError: (err: WatchError) => void
  private readonly ignore: string[]
  private readonly ignoreAbs: string[]
  private readonly rootCheckMs: number
  private main: Subscription | null = null
  private readonly covers = new Map<string, Cover>() // see coverLoop
  private readonly coverQueue = new Set<string>()
  private covering = false
  private readonly pending = new Set<string>() // to report
  private readonly toInspect = new Set<string>() // to look at for directories with subdirectories
  private readonly deleted = new Set<string>() // reported deleted by the library, in the pending batch
  private flushScheduled = false
  private readonly hot: HotDirs
  private readonly hints = new Map<string, boolean>() // gathering: path, and whether it may be a delete
  private hintTimer: NodeJS.Timeout | null = null
  private lastHintReportAt = 0
  private readonly heldGone = new Set<string>() // hinted, gone, not reported yet
  private heldTimer: NodeJS.Timeout | null = null
  private massDelete = false // the held deletes wait for the library's batch
  private readonly hintedGone = new Map<string, number>() // reported as gone by a hint, and when
  private readonly graceTimers = new Set<NodeJS.Timeout>()
  private chain: Promise<void> = Promise.resolve()
  private inspecting: Promise<void> = Promise.resolve()
  private timer: NodeJS.Timeout | null = null
  private stopped = false // closed, or failed once
  private rootDeleted = false

  constructor(root: string, identity: RootIdentity, onChange: (paths: string[]) => void, onError: (err: WatchError) => void, opts: WatchOptions) {
    this.root = root
    this.identity = identity
    this.onChange = onChange
    this.onError = onError
    this.ignore = opts.ignore ?? []
    // The server's state folder is never mirrored, so it is not watched either (no watches spent on it).
    this.ignoreAbs = [RESERVED_NAME, ...this.ignore].map(path => `${root}/${path}`)
    this.rootCheckMs = opts.rootCheckMs ?? ROOT_CHECK_MS
    this.hot = new HotDirs(root, {
      accepts: wire => isValidWirePath(wire) && !this.isIgnored(wire) && !isSameOrBelow(wire, RESERVED_NAME),
      onHint: (wire, maybeGone) => this.hint(wire, maybeGone),
    })
  }

  async start(): Promise<void> {
    this.main = await this.subscribe(this.root, true)
    this.timer = setInterval(() => this.enqueue(async () => void (await this.checkRoot())), this.rootCheckMs)
    this.timer.unref()
  }

  async close(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    await this.release()
  }

  private async release(): Promise<void> {
    if (this.timer) clearInterval(this.timer)
    this.timer = null
    this.hot.close()
    if (this.hintTimer) clearTimeout(this.hintTimer)
    this.hintTimer = null
    if (this.heldTimer) clearTimeout(this.heldTimer)
    this.heldTimer = null
    for (const timer of this.graceTimers) clearTimeout(timer)
    this.graceTimers.clear()
    const subscriptions = [...this.covers.values()].map(cover => cover.subscription)
    this.covers.clear()
    if (this.main) subscriptions.push(this.main)
    this.main = null
    await Promise.all(subscriptions.map(unsubscribeQuietly))
  }

  private fail(err: WatchError): void {
    if (this.stopped) return
    this.stopped = true
    void this.release()
    this.onError(err)
  }

  // Subscribes to `dir` (the root, or a cover below it) and maps a failure to a WatchError.
  private async subscribe(dir: string, isRoot: boolean): Promise<Subscription> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await watcher.subscribe(dir, this.callback, { backend: BACKEND, ignore: this.ignoreAbs })
      } catch (err) {
        const message = (err as Error).message
        if (isWatchLimit(message)) throw await watchLimitError()
        if (/Too many open files/.test(message)) throw await instanceLimitError('EMFILE')
        if (isRoot && !(await this.rootIsThere())) throw rootGone(this.root, 'disappeared')
        // The library's walk fails outright when a directory vanishes under it ("No such file or
        // directory", "Not a directory"). Try again; a steady failure is reported as it is.
        if (attempt >= SUBSCRIBE_ATTEMPTS) {
          throw new WatchError('SFM_WATCH_FAILED', `cannot watch ${describePath(dir)}: ${message}`)
        }
      }
    }
  }

  // One callback for every subscription: the library calls it from its debounce thread, about every 50 ms.
  private readonly callback: Callback = (err, events) => {
    if (this.stopped) return
    if (err) {
      // The library stops a watcher after reporting an error on it.
      const message = err.message
      this.enqueue(async () => {
        if (!(await this.rootIsThere())) this.fail(rootGone(this.root, 'disappeared'))
        else if (isWatchLimit(message)) this.fail(await watchLimitError())
        else this.fail(new WatchError('SFM_WATCH_FAILED', `watching ${describePath(this.root)} failed: ${message}`))
      })
      return
    }
    const prefix = `${this.root}/`
    for (const event of events) {
      // The library reports its own watch on the root ending (IN_DELETE_SELF, IN_MOVE_SELF) as a delete of
      // the root. Whatever is at that path now, this watch is dead. Other events naming the root (its
      // attributes) only lead to the identity check that every flush does: the root has no wire path.
      if (event.path === this.root && event.type === 'delete') this.rootDeleted = true
      if (!event.path.startsWith(prefix)) continue
      const wire = event.path.slice(prefix.length)
      // Names that are not UTF-8 arrive with U+FFFD in them, which is a valid wire path: the caller's
      // rescan finds nothing by that name (or the entry really named so), and the scan skips the original.
      if (!isValidWirePath(wire) || this.isIgnored(wire)) continue
      this.pending.add(wire)
      // Where this changed, more changes are likely: watch there for prompt hints (see hot-dirs.ts).
      this.hot.touch(parentOf(wire) ?? '')
      void this.hot.recheck(wire).catch(err => this.failWith(err))
      if (event.type === 'delete') {
        this.deleted.add(wire)
        const cover = this.covers.get(wire)
        if (cover) {
          this.covers.delete(wire)
          void unsubscribeQuietly(cover.subscription)
        }
      } else {
        // "create" after "delete" within one batch arrives as "update": any of them may be a new directory.
        this.toInspect.add(wire)
      }
    }
    this.scheduleFlush()
  }

  private isIgnored(wire: string): boolean {
    return this.ignore.some(path => isSameOrBelow(wire, path))
  }

  // Callbacks from several subscriptions in one turn are reported together.
  private scheduleFlush(): void {
    if (this.flushScheduled) return
    this.flushScheduled = true
    setImmediate(() => {
      this.flushScheduled = false
      this.enqueue(() => this.flush())
    })
  }

  // A prompt hint from HotDirs, reported after HINT_GATHER_MS, or HINT_REPORT_GAP_MS after the previous
  // such report. The library's batch with the same events comes later (and may come first).
  private hint(wire: string, maybeGone: boolean): void {
    if (this.stopped) return
    this.hints.set(wire, maybeGone || (this.hints.get(wire) ?? false))
    if (this.hintTimer) return
    const wait = Math.max(HINT_GATHER_MS, this.lastHintReportAt + HINT_REPORT_GAP_MS - Date.now())
    this.hintTimer = setTimeout(() => {
      this.hintTimer = null
      this.lastHintReportAt = Date.now()
      this.enqueue(() => this.flushHints())
    }, wait)
  }

  // Reports the gathered hints, except those that turn out to be deletes: they are held (see
  // DELETE_GATHER_MS).
  private async flushHints(): Promise<void> {
    const hints = [...this.hints]
    this.hints.clear()
    const gone = new Set(await findMissing(this.root, hints.filter(([, maybeGone]) => maybeGone).map(([wire]) => wire)))
    const others = hints.map(([wire]) => wire).filter(wire => !gone.has(wire))
    if (others.length > 0) await this.deliver(collapse(others), [])
    if (gone.size === 0 || this.stopped) return
    for (const wire of gone) this.heldGone.add(wire)
    if (this.heldGone.size > QUICK_DELETES && !this.massDelete) {
      this.massDelete = true
      this.holdUntil(LIBRARY_BATCH_WAIT_MS)
    } else if (!this.heldTimer) this.holdUntil(DELETE_GATHER_MS)
  }

  private holdUntil(ms: number): void {
    if (this.heldTimer) clearTimeout(this.heldTimer)
    this.heldTimer = setTimeout(() => {
      this.heldTimer = null
      this.enqueue(() => this.releaseHeld())
    }, ms)
  }

  // The held deletes, when the wait for more deletes, or for the library's batch, is over.
  private async releaseHeld(): Promise<void> {
    if (this.heldTimer) return // a mass delete started meanwhile: its own wait runs
    // Hints that came after the last look wait up to HINT_REPORT_GAP_MS, longer than DELETE_GATHER_MS:
    // they may be more deletes of the same burst, so they are looked at before anything is let go.
    if (this.hintsMayDelete()) {
      if (this.hintTimer) clearTimeout(this.hintTimer)
      this.hintTimer = null
      this.lastHintReportAt = Date.now()
      await this.flushHints()
      if (this.heldTimer || this.stopped) return // more deletes: gathering again, or a mass delete
    }
    const gone = [...this.heldGone]
    this.heldGone.clear()
    this.massDelete = false
    this.noteHintedGone(gone)
    if (gone.length > 0) await this.settle(gone, gone.length, [])
  }

  private hintsMayDelete(): boolean {
    for (const maybeGone of this.hints.values()) if (maybeGone) return true
    return false
  }

  private noteHintedGone(paths: string[]): void {
    const now = Date.now()
    for (const [wire, at] of this.hintedGone) if (now - at > HINTED_GONE_MS) this.hintedGone.delete(wire)
    for (const wire of paths) this.hintedGone.set(wire, now)
  }

  // Runs `step` after every earlier one (a report's root check stays in front of it); a throw becomes
  // SFM_WATCH_FAILED.
  private enqueue(step: () => Promise<void>): void {
    this.chain = this.chain.then(() => (this.stopped ? undefined : step())).catch(err => this.failWith(err))
  }

  private failWith(err: unknown): void {
    this.fail(new WatchError('SFM_WATCH_FAILED', `watching failed: ${String((err as Error)?.message ?? err)}`))
  }

  // Reports the library's batch, with the held deletes.
  private async flush(): Promise<void> {
    const held = [...this.heldGone]
    this.heldGone.clear()
    this.massDelete = false
    if (this.heldTimer) clearTimeout(this.heldTimer)
    this.heldTimer = null
    for (const wire of held) this.pending.add(wire)
    const paths = collapse(this.pending)
    this.pending.clear()
    const inspect = [...this.toInspect]
    this.toInspect.clear()
    // The library's batches repeat the deletes that hints reported: only new ones count.
    this.noteHintedGone(held)
    let deletes = held.length
    for (const wire of this.deleted) if (!this.hintedGone.has(wire)) deletes++
    this.deleted.clear()
    await this.settle(paths, deletes, inspect)
  }

  // Reports `paths`, of which `deletes` are deletes. Several deletes at once may be `rm -rf` of the
  // folder itself, whose own delete comes a little later: they are reported after DELETE_GRACE_MS, if
  // the folder is still there. One or two deletes (the everyday case) go at once. Reports after this
  // one do not wait for it: each checks the root itself, and their order does not matter to the caller.
  private async settle(paths: string[], deletes: number, inspect: string[]): Promise<void> {
    if (deletes > QUICK_DELETES) {
      const timer = setTimeout(() => {
        this.graceTimers.delete(timer)
        this.enqueue(() => this.deliver(paths, inspect))
      }, DELETE_GRACE_MS)
      this.graceTimers.add(timer)
      return
    }
    await this.deliver(paths, inspect)
  }

  private async deliver(paths: string[], inspect: string[]): Promise<void> {
    // Check the root before reporting: when it is removed, the same batch says that everything below it
    // was deleted, and a caller that believed it would empty the mirror.
    // close() may have come while the root was looked at: nothing is reported after it.
    if (!(await this.checkRoot()) || this.stopped) return
    if (paths.length > 0) report(this.onChange, paths)
    // On a chain of its own: reports need not wait for it.
    if (inspect.length > 0) this.inspecting = this.inspecting.then(() => (this.stopped ? undefined : this.inspect(inspect))).catch(err => this.failWith(err))
  }

  // True while the root is the directory we started with. Reports SFM_ROOT_GONE otherwise.
  private async checkRoot(): Promise<boolean> {
    if (await this.rootIsThere()) return true
    this.fail(rootGone(this.root, 'was removed, moved away or unmounted'))
    return false
  }

  private async rootIsThere(): Promise<boolean> {
    if (this.rootDeleted) return false
    const now = await identityOf(this.root)
    return now !== null && sameRoot(now, this.identity)
  }

  // Workaround 1, missed subdirectories. The library watches a new directory when it sees it created or
  // moved in, but does not look inside: a subdirectory that was already there (`mv` of a tree into the
  // folder, `mkdir -p`, an unpacked archive) is never watched, and later changes in it are never reported.
  // So each reported directory that has a subdirectory gets its own subscription (a "cover"), whose first
  // walk watches its whole subtree.
  //
  // Workaround 2, the silent watch limit. When inotify_add_watch fails for a new directory, the library
  // drops the directory without a word. A directory showing up is when that can happen, so each batch with
  // one tries to add a watch of its own; ENOSPC means the limit is reached.
  private async inspect(paths: string[]): Promise<void> {
    let sawDirectory = false
    await forEachLimit(paths, INSPECT_CONCURRENCY, async wire => {
      const path = `${this.root}/${wire}`
      const st = await lstat(path, { bigint: true }).catch(() => null)
      if (!st?.isDirectory()) return
      sawDirectory = true
      const cover = this.covers.get(wire)
      // Already covered in this very state: a second walk would find nothing new.
      if (cover && cover.ino === st.ino && cover.ctimeNs === st.ctimeNs) return
      if (await this.hasSubdirectory(path, wire)) this.cover(wire)
    })
    if (sawDirectory && probeWatchLimit(this.root)) this.fail(await watchLimitError())
  }

  private async hasSubdirectory(path: string, wire: string): Promise<boolean> {
    const dirents = await readdir(path, { withFileTypes: true }).catch(() => [])
    for (const dirent of dirents) {
      if (this.isIgnored(`${wire}/${dirent.name}`)) continue
      if (dirent.isDirectory()) return true
      // Some file systems do not fill in d_type.
      const known = dirent.isFile() || dirent.isSymbolicLink() || dirent.isFIFO() || dirent.isSocket() || dirent.isCharacterDevice() || dirent.isBlockDevice()
      if (!known && (await lstat(`${path}/${dirent.name}`).catch(() => null))?.isDirectory()) return true
    }
    return false
  }

  private cover(wire: string): void {
    this.coverQueue.add(wire)
    if (!this.covering) void this.coverLoop()
  }

  // One cover at a time, topmost first. A new cover makes the covers below it redundant (its walk is newer),
  // so they are dropped. Every new cover reports its directory again: the caller's rescan must come after
  // the subscription, or a change made between the two would be lost.
  private async coverLoop(): Promise<void> {
    this.covering = true
    try {
      while (this.coverQueue.size > 0 && !this.stopped) {
        const wanted = collapse(this.coverQueue)
        this.coverQueue.clear()
        for (const wire of wanted) {
          if (this.stopped) return
          await this.replaceCover(wire)
        }
      }
    } finally {
      this.covering = false
    }
  }

  private async replaceCover(wire: string): Promise<void> {
    const path = `${this.root}/${wire}`
    // The library shares one watcher, and one walked tree, per directory: the old subscription must go
    // before a new one on the same directory can walk it afresh.
    const same = this.covers.get(wire)
    if (same) {
      this.covers.delete(wire)
      await unsubscribeQuietly(same.subscription)
    }
    const before = await lstat(path, { bigint: true }).catch(() => null)
    if (!before?.isDirectory()) return
    let subscription: Subscription
    try {
      subscription = await this.subscribe(path, false)
    } catch (err) {
      // Gone or replaced meanwhile: the events for that are on their way.
      if ((err as WatchError).code === 'SFM_WATCH_FAILED' && !(await lstat(path).catch(() => null))?.isDirectory()) return
      if (!this.stopped) this.fail(err as WatchError)
      return
    }
    if (this.stopped) {
      await unsubscribeQuietly(subscription)
      return
    }
    this.covers.set(wire, { subscription, ino: before.ino, ctimeNs: before.ctimeNs })
    for (const [other, cover] of this.covers) {
      if (other !== wire && isSameOrBelow(other, wire)) {
        this.covers.delete(other)
        await unsubscribeQuietly(cover.subscription)
      }
    }
    this.pending.add(wire)
    this.scheduleFlush()
  }
}

// inotify on Linux, whatever else is installed: by default the library prefers watchman where it finds one,
// which behaves differently.
/* c8 ignore next */
const BACKEND: watcher.BackendType | undefined = process.platform === 'linux' ? 'inotify' : undefined

// Null when the root is missing or not a directory; other errors (EACCES) are not taken for that.
async function identityOf(path: string): Promise<RootIdentity | null> {
  try {
    return await rootIdentity(path)
  } catch (err) {
    if (codeOf(err) === 'SFM_ROOT_GONE') return null
    throw err
  }
}

function rootGone(root: string, detail: string): WatchError {
  return new WatchError('SFM_ROOT_GONE', `the folder ${describePath(root)} ${detail}`)
}

// How the library reports the limit: its subscribe walk throws
// "inotify_add_watch on '<dir>' failed: No space left on device"; Node's fs.watch says ENOSPC.
export function isWatchLimit(message: string): boolean {
  return /No space left on device|ENOSPC/.test(message)
}

export async function watchLimitError(): Promise<WatchError> {
  const current = await readSysctl('max_user_watches')
  const next = Math.max(524_288, (current ?? 0) * 2)
  const now = current === null ? '' : ` (fs.inotify.max_user_watches is ${current})`
  return new WatchError(
    'SFM_WATCH_LIMIT',
    `the system limit on watched directories is reached${now}; sfm needs one per directory. ` +
      `Raise it with: sudo sysctl fs.inotify.max_user_watches=${next} ` +
      `and keep it after a reboot with: echo fs.inotify.max_user_watches=${next} | sudo tee /etc/sysctl.d/60-sfm-inotify.conf`,
  )
}

export async function instanceLimitError(code: string): Promise<WatchError> {
  const current = await readSysctl('max_user_instances')
  const next = Math.max(1_024, (current ?? 0) * 2)
  const now = current === null ? '' : ` (fs.inotify.max_user_instances is ${current})`
  return new WatchError(
    'SFM_WATCH_LIMIT',
    `cannot start an inotify instance (${code}): the limit on inotify instances${now} or on open files ` +
      `(ulimit -n) is reached. Raise the first with: sudo sysctl fs.inotify.max_user_instances=${next} ` +
      `and keep it after a reboot with: echo fs.inotify.max_user_instances=${next} | sudo tee /etc/sysctl.d/60-sfm-inotify.conf`,
  )
}

async function readSysctl(name: string): Promise<number | null> {
  const text = await readFile(`/proc/sys/fs/inotify/${name}`, 'utf8').catch(() => null)
  const value = text === null ? NaN : Number.parseInt(text, 10)
  return Number.isFinite(value) ? value : null
}

// Adds and removes one inotify watch through Node's own watcher (a separate inotify instance, so a slot
// of its own). True when that fails with ENOSPC.
function probeWatchLimit(dir: string): boolean {
  try {
    fsWatch(dir).close()
    return false
  } catch (err) {
    return codeOf(err) === 'ENOSPC'
  }
}

// Workaround 3, the hang. When the library cannot create its inotify instance (EMFILE: too many instances
// or open files), its thread throws before signalling that it started, and subscribe() blocks the JS
// thread forever. So a worker thread, with an event loop and an inotify instance of its own, first checks
// that one can be created and can watch the root.
async function preflight(root: string): Promise<void> {
  /* c8 ignore next */
  if (process.platform !== 'linux') return
  const result = await probeInWorker(root)
  if (result === null || result === 'ENOENT' || result === 'ENOTDIR') {
    // The worker has exited, so its descriptors are back. The library's thread needs three (a pipe and
    // the inotify instance) before it can report anything, and its walk one per directory level.
    if (hasSpareDescriptors(FD_HEADROOM)) return // (a missing root: the subscribe will say)
    throw await instanceLimitError('EMFILE')
  }
  if (result === 'ENOSPC') throw await watchLimitError()
  if (result === 'EMFILE' || result === 'ENFILE') throw await instanceLimitError(result)
  throw new WatchError('SFM_WATCH_FAILED', `cannot watch ${describePath(root)}: ${result}`)
}

// Null when a fresh inotify instance could watch `dir`, else an error code. Resolves after the worker exited.
async function probeInWorker(dir: string): Promise<string | null> {
  const code =
    "const { parentPort, workerData } = require('node:worker_threads'); const fs = require('node:fs');" +
    'try { fs.watch(workerData).close(); parentPort.postMessage(null) } catch (e) { parentPort.postMessage(e.code || String(e)) }'
  let worker: Worker
  try {
    worker = new Worker(code, { eval: true, workerData: dir })
  } catch (err) {
    /* c8 ignore next 2: Node reports a failed start through the 'error' event */
    return codeOf(err) ?? String(err)
  }
  const outcome = await new Promise<string | null>(resolve => {
    const timer = setTimeout(() => resolve('ETIMEDOUT'), PREFLIGHT_TIMEOUT_MS)
    const settle = (value: string | null) => {
      clearTimeout(timer)
      resolve(value)
    }
    worker.once('message', (message: string | null) => settle(message))
    // A worker that cannot start says why in its message: "Worker initialization failure: EMFILE".
    worker.once('error', err => settle(/\bE[A-Z]+\b/.exec(err.message)?.[0] ?? String(err.message)))
    worker.once('exit', () => settle('the check exited early'))
  })
  await worker.terminate()
  return outcome
}

function hasSpareDescriptors(count: number): boolean {
  const opened: number[] = []
  try {
    for (let i = 0; i < count; i++) opened.push(openSync('/dev/null', 'r'))
    return true
  } catch {
    return false
  } finally {
    for (const fd of opened) closeSync(fd)
  }
}

async function unsubscribeQuietly(subscription: Subscription): Promise<void> {
  // After its directory is removed the library's unsubscribe throws "Unable to remove watcher: Invalid
  // argument" (the kernel dropped the watch already). There is nothing left to undo.
  await subscription.unsubscribe().catch(() => {})
}

// Calls the caller's onChange; a throw there is the caller's bug and is rethrown as an uncaught exception
// rather than taken for a watch failure.
function report(onChange: (paths: string[]) => void, paths: string[]): void {
  try {
    onChange(paths)
  } catch (err) {
    process.nextTick(() => {
      throw err
    })
  }
}

// Sorted, without any path below another one in the set: rescanning `a` covers `a/b`.
export function collapse(paths: Iterable<string>): string[] {
  const sorted = [...paths].sort()
  const kept = new Set<string>()
  for (const path of sorted) {
    let covered = false
    for (let parent = parentOf(path); parent !== null; parent = parentOf(parent)) {
      if (kept.has(parent)) {
        covered = true
        break
      }
    }
    if (!covered) kept.add(path)
  }
  return [...kept]
}

// Those of `paths` that do not exist (below `root`).
async function findMissing(root: string, paths: string[]): Promise<string[]> {
  const missing: string[] = []
  await forEachLimit(paths, INSPECT_CONCURRENCY, async wire => {
    const st = await lstat(`${root}/${wire}`).catch((err: unknown) => (codeOf(err) === 'ENOENT' || codeOf(err) === 'ENOTDIR' ? null : true))
    if (st === null) missing.push(wire)
  })
  return missing
}

async function forEachLimit<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!)
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
}

function codeOf(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | null)?.code
}
