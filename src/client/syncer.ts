// The client's sync engine for one connection: reconcile the whole tree, then turn every reported
// change into passes of plan -> send. Sends happen in plan order (the server applies in that order);
// reading and asking HAVE? for the files ahead overlap with sending. Replies arrive asynchronously: a
// failed change puts its path back on the dirty list.
import { join } from 'node:path'
import type { FileIdentity } from '../digest.js'
import { HASH_BYTES, hashKey } from '../hash.js'
import type { ContentTree } from '../tree.js'
import type { Logger } from '../log.js'
import type { ClientMessage } from '../protocol/messages.js'
import { appliedMode } from '../protocol/modes.js'
import { EMPTY_DIGEST, MirrorDigest } from '../protocol/mirror-digest.js'
import { isSameOrBelow, isValidWirePath, parentOf } from '../protocol/paths.js'
import { lstat, readdir } from 'node:fs/promises'
import { ConnectionError, type Connection, type Outcome } from './connection.js'
import { streamNewFile, type StreamedFile } from './stream-upload.js'
import type { KnownContent } from './known.js'
import { plan, type Op } from './planner.js'
import { RemoteTree, type RemoteEntry } from './remote.js'
import { rootIdentity, sameRoot, scanTree, statEntry, type LocalEntry, type RootIdentity } from './scan.js'
import { IGNORE_FILE, type IgnoreRules } from './ignore-rules.js'
import { DEFAULT_DELETE_LIMIT, HeldBack, describeLimit, overLimit, type DeleteLimit } from './safety.js'
import { formatBytes, type SyncStats } from './stats.js'
import { BATCH_READ_BYTES, SMALL_FILE_BYTES, negotiate, readFileDigest, readSmallFilesDigest, streamSpans, treeIds, type NotReady, type PreparedFile, type Span } from './uploader.js'

/**
 * Uploads read and negotiated ahead of the one being sent, and the bytes of small files they may hold.
 * Their questions (HAVE?) go out in groups of 64 (connection.ts): with two groups ahead, the answers to
 * one come back while the files before it are sent. With 64 ahead and the questions sent only when the
 * client ran out of answers, it waited for a round trip every 64 files. Small files are read half a
 * window at a time, in one job on the thread pool (readSmallFilesDigest): with 512 ahead, benchmark W2
 * took 5.2-5.6 s against 5.8-6.1 s with 128, in interleaved runs.
 */
const PREPARE_AHEAD = 512
const PREPARE_AHEAD_BYTES = 16 << 20
/**
 * Files from this size on are read, chunked and sent in one pass (stream-upload.ts) instead of being
 * read once to build their tree and again to send: for new data the second read is pure cost, and for
 * an edited file the server starts rebuilding it from its old chunks while the client is still reading.
 */
const STREAM_MIN_BYTES = 8 << 20
/** How long a deleted entry can still be brought back by RENAME (the server keeps it 60 s). */
const RECENT_DELETE_MS = 45_000
/**
 * A scan started before the connection is used only if the connection came this soon: a --once run
 * that waited for its server looks at the folder as it is once connected.
 */
const AHEAD_MAX_AGE_MS = 2_000
/** Attempts per path, 100 ms to 1.6 s apart, before the client says it gives up for now. */
const MAX_ATTEMPTS = 5
/** After that, in watch mode: the first slow retry, doubling up to the second. */
const SLOW_RETRY_MS = 10_000
const SLOW_RETRY_MAX_MS = 5 * 60_000

export interface SyncerOptions {
  root: string
  log: Logger
  known: KnownContent
  stats: SyncStats
  /** Called for every change the server confirmed (for --verbose and the demo). */
  onApplied?: (what: string, path: string) => void
  /** Called when a reconcile of the whole tree is finished and confirmed. */
  onReconciled?: () => void
  /** How much one pass may delete before its deletes are held back (default 50%). */
  deleteLimit?: DeleteLimit
  /** Mirror an empty folder over a non-empty mirror (otherwise held back: an unmounted disk?). */
  allowEmpty?: boolean
  /** Paths left alone on both sides (.sfmignore and --ignore). */
  ignore?: IgnoreRules
  /** --dry-run: report what one reconcile would do, line by line, and change nothing. */
  dryRun?: (line: string) => void
}

/** How often held-back changes are looked at again, to let them go once their reason is gone. */
const HELD_RECHECK_MS = 3_000
/**
 * A watch pass compares the whole directory of each changed path with the mirror's model, so an event
 * the watcher lost (for a sibling in the same directory) is repaired by the next change there; for
 * directories bigger than this, only the periodic rescan does.
 */
const SIBLING_CHECK_MAX = 10_000
/**
 * An entry the sibling check finds gone, that the watcher has not reported, is deleted only this much
 * later: the watcher reports a delete burst (`rm -rf`) in pieces, and holds its larger pieces back to
 * see the whole of it (for the folder's own removal, and for --max-delete). A pass started by the first
 * piece must not delete the rest ahead of that. The watcher's own report comes first as a rule (it
 * reports at least every 500 ms, holds a delete burst at most about a second); a delete it lost for good
 * is made then.
 */
const UNREPORTED_DELETE_MS = 2_000

/**
 * Deletes are counted against --max-delete over this window, not only per pass: the watcher can report
 * a mass delete in several batches, which one by one would each stay under the limit.
 */
const DELETE_WINDOW_MS = 5_000

interface Prepared {
  kind: 'prepared'
  file: PreparedFile
  spans: Span[]
}

type Deleted = { path: string; entries: RemoteEntry[]; at: number }

export class RootChangedError extends Error {
  readonly code = 'SFM_ROOT_GONE'
}

export class Syncer {
  private remote = new RemoteTree()
  private conn: Connection | null = null
  private rootId: RootIdentity | null = null
  // what needs another look: everything (after connecting), or paths and what is below them
  private full = true
  /** The scan of the whole folder for the next full pass, started before the listing came. */
  private earlyScan: Promise<Map<string, LocalEntry>> | null = null
  /** A scan started before the first connection (scanAhead), for the first run() to take. */
  private ahead: { scan: Promise<Map<string, LocalEntry>>; at: number } | null = null
  private dirty = new Set<string>()
  private wake: (() => void) | null = null
  // replies (and retries) still to come: drain() returns only once there are none
  private awaited = 0
  private allAnswered: (() => void) | null = null
  private readonly attempts = new Map<string, number>()
  // for recognising moves: the inode each path had when last seen, and recently deleted entries
  private readonly inoOf = new Map<string, bigint>()
  private readonly deleted = new Map<bigint, Deleted>()
  // inodes of the paths that disappeared in the current pass, for remembering what a DELETE removed
  private vanished = new Map<string, bigint>()
  /** Gone entries found by the sibling check, not reported by the watcher: looked at again later. */
  private readonly unreportedGone = new Set<string>()
  private unreportedTimer: NodeJS.Timeout | null = null
  // chunk ids being uploaded by a change whose reply has not come yet, with that reply
  private readonly inflight = new Map<string, Promise<boolean>>()
  /** Paths that could not be synced after all attempts (reported by --once). */
  readonly gaveUp = new Set<string>()
  /** Why changes are being held back right now, or null. */
  private held: string | null = null
  /** Deletes sent recently (entries, and when), for the windowed --max-delete. */
  private recentDeletes: Array<{ at: number; entries: number }> = []
  private once = false
  /** The passes of the current connection, while they run. */
  private draining: Promise<void> | null = null

  constructor(private readonly opts: SyncerOptions) {}

  /** Paths the watcher reported: each path and what is below it may have changed. */
  markChanged(paths: Iterable<string>): void {
    for (const p of paths) {
      this.dirty.add(p)
      this.attempts.delete(p)
      this.gaveUp.delete(p)
    }
    this.wake?.()
  }

  /** Asks for another look at the whole folder (when the watcher cannot see all of it). */
  rescanAll(): void {
    this.full = true
    this.wake?.()
  }

  /**
   * --once: starts the scan of the whole folder before the first connection, so that it overlaps the
   * connect and the handshake. The first run() takes it; a run after a reconnect scans again.
   */
  scanAhead(): void {
    this.ahead = { scan: this.freshScan(), at: Date.now() }
  }

  private freshScan(): Promise<Map<string, LocalEntry>> {
    const scan = (async () => {
      await this.opts.ignore?.reload()
      return this.scanAll()
    })()
    scan.catch(() => {}) // a failure surfaces in the pass that takes it
    return scan
  }

  /** The identity of the folder when sync started: a different one later means it was replaced. */
  async pinRoot(): Promise<void> {
    this.rootId = await rootIdentity(this.opts.root)
  }

  /**
   * Runs on one connection: lists the mirror, reconciles everything, then (unless `once`) keeps
   * applying changes until the connection ends. Resolves after `once` when every change is
   * confirmed; otherwise rejects with the reason the connection ended.
   */
  async run(conn: Connection, once: boolean): Promise<void> {
    // A pass of the connection before may still be running: it fails at its next request. Let it end
    // first, so that it neither sends on this connection nor changes this connection's model.
    await this.draining?.catch(() => {})
    this.inflight.clear()
    this.conn = conn
    this.once = once
    this.opts.known.useMirror(conn.welcome.mirrorId)
    // The first pass looks at the whole folder: that starts now, while the mirror's listing is on its way
    // (or earlier: scanAhead). It covers every change reported so far; those reported from now on get a
    // pass of their own.
    this.dirty = new Set()
    const ahead = this.ahead && Date.now() - this.ahead.at <= AHEAD_MAX_AGE_MS ? this.ahead.scan : null
    this.ahead = null
    this.earlyScan = ahead ?? this.freshScan()
    const mirror = once && conn.hasDigest ? await this.compareWithMirror(conn, this.earlyScan) : 'different'
    if (mirror === 'same') {
      this.earlyScan = null
      this.full = false
      if (this.opts.dryRun) await this.describe([], this.opts.dryRun)
    } else {
      this.remote = new RemoteTree(mirror === 'empty' ? [] : await conn.list())
      this.full = true
    }
    const closed = conn.closed.then((err) => {
      throw err
    })
    closed.catch(() => {})
    let reconciled = false
    for (;;) {
      this.draining = this.drain()
      await Promise.race([this.draining, closed])
      if (!reconciled) {
        reconciled = true
        this.opts.onReconciled?.()
      }
      if (this.opts.dryRun) return
      if (once && this.held) throw new HeldBack(this.held)
      if (once && !this.full && this.dirty.size === 0) return
      if (once) continue
      await Promise.race([new Promise<void>((resolve) => (this.wake = resolve)), closed])
      this.wake = null
    }
  }

  /** Runs passes until nothing is dirty and every change sent has its reply. */
  private async drain(): Promise<void> {
    for (;;) {
      if (this.full || this.dirty.size > 0) {
        const full = this.full
        // A full pass covers every change reported before its scan; one scanned early (see run()) leaves
        // those reported since in `dirty`.
        const paths = full && this.earlyScan ? new Set<string>() : this.dirty
        if (paths === this.dirty) this.dirty = new Set()
        this.full = false
        await this.pass(full, paths)
        continue
      }
      if (this.awaited === 0) return
      // Wait for the replies, or for a new change: one slow reply (a long flush on the server) must
      // not hold up the next change, which the server may well apply meanwhile.
      await new Promise<void>((resolve) => {
        this.wake = resolve
        this.allAnswered = resolve
      })
      this.wake = null
      this.allAnswered = null
    }
  }

  private async pass(full: boolean, paths: Set<string>): Promise<void> {
    const ops = await this.planPass(full, paths)
    if (this.opts.dryRun) return this.describe(ops, this.opts.dryRun)
    await this.execute(ops)
  }

  /**
   * Looks at the folder and decides what to send. The folder's entries and the candidate paths end with
   * this call: while the changes are sent, the pass holds only the changes still to send.
   */
  private async planPass(full: boolean, paths: Set<string>): Promise<Op[]> {
    const root = this.opts.root
    const warn = (msg: string) => this.opts.log.warn(msg)
    const rules = this.opts.ignore
    // An edited .sfmignore can bring back paths anywhere in the tree: look at all of it again.
    if (!full && rules && paths.has(IGNORE_FILE) && (await rules.reload())) {
      this.opts.log.info(`${IGNORE_FILE} changed: looking at the whole folder again`)
      full = true
    }
    const isIgnored = rules ? (p: string, isDir: boolean) => rules.ignores(p, isDir) : undefined
    await this.checkRoot()
    let local = new Map<string, LocalEntry>()
    const candidates = new Set<string>()
    let unreportedGone: string[] = []
    if (full) {
      local = await (this.earlyScan ?? this.scanAll())
      this.earlyScan = null
      for (const p of local.keys()) candidates.add(p)
      for (const p of this.remote.paths()) candidates.add(p)
    } else {
      unreportedGone = await this.addMissedSiblings(paths)
      for (const p of topmost(paths)) {
        const e = await statEntry(root, p, { onWarning: warn })
        if (rules?.ignores(p, (e ?? this.remote.get(p))?.kind === 'dir')) continue
        candidates.add(p)
        if (e?.kind === 'dir') {
          for (const [q, qe] of await scanTree(root, { under: p, onWarning: warn, isIgnored })) {
            local.set(q, qe)
            candidates.add(q)
          }
        }
        if (e) local.set(p, e)
        for (const q of this.remote.below(p)) candidates.add(q)
        const parent = parentOf(p)
        if (parent !== null && !local.has(parent)) {
          const pe = await statEntry(root, parent, { onWarning: warn })
          if (pe?.kind === 'dir') {
            local.set(parent, pe)
            candidates.add(parent)
          }
        }
      }
    }
    this.deferUnreportedGone(unreportedGone, local, candidates)
    if (rules) {
      // ignored entries of the mirror are left alone: never compared, so never deleted
      for (const p of candidates) {
        const kind = (local.get(p) ?? this.remote.get(p))?.kind
        if (!local.has(p) && rules.ignores(p, kind === 'dir')) candidates.delete(p)
      }
    }
    await this.checkRoot()
    const renames = full ? [] : this.findMoves(local, candidates)
    // what a move brings along must be compared too: the folder may differ from it below the target
    for (const m of renames) for (const q of this.remote.below(m.from)) candidates.add(m.to + q.slice(m.from.length))
    // A one-shot run never sees a move it could use them for (full passes do not look for moves), and
    // for 100,000 files they are 100,000 BigInts and map entries held to the end of the run
    if (!this.once) this.rememberInodes(local, candidates)
    let ops = plan({ candidates, local, remote: this.remote, renames })
    if (rules) ops = this.spareIgnored(ops, rules)
    ops = this.guard(ops, full, local.size, candidates)
    if (full) {
      let files = 0
      let bytes = 0
      for (const op of ops) {
        if (op.kind !== 'upload') continue
        files++
        bytes += op.local.size
      }
      this.opts.stats.plan(files, bytes)
    }
    return ops
  }

  /** Every entry of the folder, after checking that the folder is still the one we started with. */
  private async scanAll(): Promise<Map<string, LocalEntry>> {
    await this.checkRoot()
    const rules = this.opts.ignore
    const isIgnored = rules ? (p: string, isDir: boolean) => rules.ignores(p, isDir) : undefined
    return scanTree(this.opts.root, { onWarning: (msg) => this.opts.log.warn(msg), isIgnored })
  }

  /**
   * --dry-run: says what the pass would do, and for each upload how many bytes would actually cross
   * the wire (HAVE? asks the server, which changes nothing), without sending any change.
   */
  private async describe(ops: Op[], say: (line: string) => void): Promise<void> {
    let files = 0
    let bytes = 0
    let send = 0
    for (const op of ops) {
      switch (op.kind) {
        case 'upload': {
          const prep = await this.prepare(op.path)
          if (prep.kind !== 'prepared') {
            say(`upload   ${op.path} (changing while read; would be retried)`)
            break
          }
          const missing = prep.spans.reduce((n, s) => n + (s.ref ? 0 : s.length), 0)
          files++
          bytes += op.local.size
          send += missing
          say(`upload   ${op.path} (${formatBytes(op.local.size)}, would send ${formatBytes(missing)})`)
          break
        }
        case 'rename':
          say(`rename   ${op.from} -> ${op.to}`)
          break
        case 'dirattr':
        case 'setattr':
          say(`attrs    ${op.path}`)
          break
        default:
          say(`${op.kind.padEnd(8)} ${op.path}`)
      }
    }
    const deletes = ops.filter((op) => op.kind === 'delete').length
    say(`dry run: would upload ${files} file(s) (${formatBytes(bytes)}, sending ${formatBytes(send)}), delete ${deletes} entr${deletes === 1 ? 'y' : 'ies'}, and make ${ops.length - files - deletes} other change(s); nothing was changed`)
  }

  /**
   * A directory deleted from the folder may hold, on the mirror, entries that are ignored: they stay
   * (as rsync keeps excluded files), so the delete is narrowed to what around them is not ignored.
   */
  private spareIgnored(ops: Op[], rules: IgnoreRules): Op[] {
    const out: Op[] = []
    for (const op of ops) {
      if (op.kind !== 'delete' || this.remote.get(op.path)?.kind !== 'dir') {
        out.push(op)
        continue
      }
      const below = [...this.remote.below(op.path)]
      const kept = below.filter((p) => rules.ignores(p, this.remote.get(p)?.kind === 'dir'))
      if (kept.length === 0) {
        out.push(op)
        continue
      }
      // keep the ignored entries and every directory on the way to them; delete the rest, topmost first
      const keep = new Set<string>()
      for (const p of kept) for (let q: string | null = p; q !== null && q !== op.path; q = parentOf(q)) keep.add(q)
      const gone: string[] = []
      for (const p of below) if (!keep.has(p) && !gone.some((g) => isSameOrBelow(p, g))) gone.push(p)
      for (const p of gone) out.push({ kind: 'delete', path: p })
    }
    return out
  }

  /**
   * Holds back what looks like an accident rather than an intent: everything when the folder is empty
   * but the mirror is not, and the deletes of a pass that would delete more than the limit. What is held
   * is looked at again every few seconds and goes ahead by itself once it is no longer asked for (the
   * files are back); in --once mode the run ends with an error instead.
   */
  private guard(ops: Op[], full: boolean, localEntries: number, candidates: Set<string>): Op[] {
    let reason: string | null = null
    let kept = ops
    const emptying = full && localEntries === 0 && this.remote.size > 0
    if (emptying && this.opts.allowEmpty) {
      // asked for explicitly: an empty folder is meant to empty the mirror, whatever the delete limit
    } else if (emptying) {
      reason =
        `${this.opts.root} is empty but the mirror has ${this.remote.size} entries: nothing is deleted ` +
        `(is a disk not mounted?); to mirror an empty folder, start with --allow-empty`
      kept = []
    } else {
      const deletes = ops.filter((op) => op.kind === 'delete')
      const deleting = deletes.reduce((n, op) => n + 1 + [...this.remote.below((op as { path: string }).path)].length, 0)
      const now = Date.now()
      this.recentDeletes = this.recentDeletes.filter((d) => now - d.at < DELETE_WINDOW_MS)
      const recent = this.recentDeletes.reduce((n, d) => n + d.entries, 0)
      const limit = this.opts.deleteLimit ?? DEFAULT_DELETE_LIMIT
      // the mirror's size before this window's deletes, and everything this window would delete
      if (deleting > 0 && overLimit(limit, recent + deleting, this.remote.size + recent)) {
        reason =
          `this would delete ${recent + deleting} of the mirror's ${this.remote.size + recent} entries, more than ` +
          `--max-delete ${describeLimit(limit)}: the deletes are held back until the files are back, or restart with a higher --max-delete`
        kept = ops.filter((op) => op.kind !== 'delete')
      } else if (deleting > 0) {
        this.recentDeletes.push({ at: now, entries: deleting })
      }
    }
    if (reason === null) {
      if (this.held) this.opts.log.info('held-back changes are no longer needed or now allowed; syncing normally')
      this.held = null
      return ops
    }
    if (reason !== this.held) this.opts.log.warn(reason)
    this.held = reason
    if (!this.once) {
      const again = full ? null : [...candidates]
      setTimeout(() => {
        if (again) this.markChanged(again)
        else {
          this.full = true
          this.wake?.()
        }
      }, HELD_RECHECK_MS).unref()
    }
    return kept
  }

  /**
   * Adds to `paths` the entries of each changed path's directory that are new in the folder, and returns
   * those that are gone from it, which the watcher did not report (yet): what a lost event left behind,
   * or the watcher's next report.
   */
  private async addMissedSiblings(paths: Set<string>): Promise<string[]> {
    const gone: string[] = []
    const dirs = new Set([...paths].map((p) => parentOf(p) ?? ''))
    for (const dir of dirs) {
      const known = this.remote.childrenOf(dir)
      if (known.size > SIBLING_CHECK_MAX) continue
      let names: string[]
      try {
        names = await readdir(dir ? join(this.opts.root, dir) : this.opts.root)
      } catch {
        continue // gone or not a directory: the changed path itself says so
      }
      const here = new Set(names.map((n) => (dir ? `${dir}/${n}` : n)))
      for (const p of known) if (!here.has(p) && !paths.has(p)) gone.push(p)
      for (const p of here) if (!known.has(p) && isValidWirePath(p)) paths.add(p)
    }
    return gone
  }

  /**
   * The unreported gone entries wait (UNREPORTED_DELETE_MS), except where one moved to a path that this
   * pass looks at: the move is made now, which deletes nothing.
   */
  private deferUnreportedGone(gone: string[], local: Map<string, LocalEntry>, candidates: Set<string>): void {
    if (gone.length === 0) return
    const movedHere = new Set<bigint>()
    for (const e of local.values()) movedHere.add(e.ino)
    for (const p of gone) {
      const ino = this.inoOf.get(p)
      if (ino !== undefined && movedHere.has(ino)) {
        candidates.add(p)
        for (const q of this.remote.below(p)) candidates.add(q)
      } else this.unreportedGone.add(p)
    }
    if (this.unreportedTimer || this.unreportedGone.size === 0) return
    this.unreportedTimer = setTimeout(() => {
      this.unreportedTimer = null
      const again = [...this.unreportedGone]
      this.unreportedGone.clear()
      this.markChanged(again)
    }, UNREPORTED_DELETE_MS)
    this.unreportedTimer.unref()
  }

  /**
   * --once: how the mirror compares with the folder, by their mirror digests (PROTOCOL.md 5.5). 'same'
   * means equal in everything a pass compares: the pass would send nothing, and the mirror's listing
   * (about 60 bytes an entry, most of a re-sync's time when nothing changed) is not needed. 'empty'
   * means the mirror holds nothing: its listing would be empty. A watching client lists anyway: its
   * model of the mirror keeps the content ids that later changes are compared with.
   */
  private async compareWithMirror(conn: Connection, scan: Promise<Map<string, LocalEntry>>): Promise<'same' | 'empty' | 'different'> {
    // a failed request leaves it to the listing asked next to report the connection's end
    const theirs = await conn.digest().catch(() => null)
    if (!theirs) return 'different'
    if (theirs.equals(EMPTY_DIGEST)) return 'empty'
    const local = await scan
    await this.checkRoot()
    const mine = new MirrorDigest()
    for (const [path, e] of local) {
      if (e.unreadable) return 'different' // contents unknown: only a pass can treat them right
      if (e.kind === 'file') mine.add({ kind: 'file', path, mode: appliedMode('file', e.mode), mtimeNs: e.mtimeNs, size: e.size })
      else if (e.kind === 'dir') mine.add({ kind: 'dir', path, mode: appliedMode('dir', e.mode), mtimeNs: e.mtimeNs })
      else mine.add({ kind: 'symlink', path, mtimeNs: e.mtimeNs, target: e.target! })
    }
    if (!mine.value().equals(theirs)) return 'different'
    this.opts.log.info(`the mirror matches the folder (${mine.entries} entries): nothing to send`)
    return 'same'
  }

  /** Stops with an error if the folder is gone or was replaced: never a mass delete [issue: vanished root]. */
  private async checkRoot(): Promise<void> {
    const now = await rootIdentity(this.opts.root)
    if (this.rootId && !sameRoot(now, this.rootId)) {
      throw new RootChangedError(`the folder ${this.opts.root} was replaced by another one; stopping`)
    }
  }

  // ------------------------------------------------------------------------------------------
  // Moves: an entry that appears with the inode of one that disappeared (in this pass, or deleted
  // recently) was moved, and the server can move it too instead of receiving it again.

  private findMoves(local: Map<string, LocalEntry>, candidates: Set<string>): Array<{ from: string; to: string }> {
    const moves: Array<{ from: string; to: string }> = []
    const claimed = new Set<string>()
    // a move's source is a path of this pass that is gone from the folder
    const vanishedByIno = new Map<bigint, string>()
    for (const p of candidates) {
      const ino = local.has(p) ? undefined : this.inoOf.get(p)
      if (ino !== undefined) vanishedByIno.set(ino, p)
    }
    for (const to of candidates) {
      const l = local.get(to)
      if (!l) continue
      const r = this.remote.get(to)
      if (r && r.kind === l.kind) continue // not new here
      const from = vanishedByIno.get(l.ino)
      if (from !== undefined && from !== to && !claimed.has(from)) {
        const old = this.remote.get(from)
        if (old && sameThing(old, l) && !moves.some((m) => isSameOrBelow(to, m.to) || isSameOrBelow(from, m.from))) {
          moves.push({ from, to })
          claimed.add(from)
          continue
        }
      }
      const gone = this.deleted.get(l.ino)
      if (gone && Date.now() - gone.at < RECENT_DELETE_MS && sameThing(gone.entries[0]!, l) && !this.remote.has(gone.path)) {
        moves.push({ from: gone.path, to })
        this.deleted.delete(l.ino)
        // the server restores it from its trash [M-RENAME-2]: so does our model
        for (const e of gone.entries) this.remote.set(e)
      }
    }
    return moves
  }

  private rememberInodes(local: Map<string, LocalEntry>, candidates: Set<string>): void {
    this.vanished = new Map()
    for (const p of candidates) {
      const e = local.get(p)
      const old = this.inoOf.get(p)
      if (e) {
        this.inoOf.set(p, e.ino)
      } else if (old !== undefined) {
        this.inoOf.delete(p)
        this.vanished.set(p, old)
      }
    }
  }

  // ------------------------------------------------------------------------------------------
  // Sending

  private async execute(ops: Op[]): Promise<void> {
    // content the pass deletes, by content id, so that a new name for it becomes a RENAME; and by size
    // and mtime, which a moved file keeps, to know which new files may be such a move
    const deleting = new Map<string, string>()
    const deletingShapes = new Set<string>()
    for (const op of ops) {
      if (op.kind !== 'delete') continue
      for (const p of [op.path, ...this.remote.below(op.path)]) {
        const e = this.remote.get(p)
        if (e?.kind !== 'file') continue
        deleting.set(e.contentKey, p)
        deletingShapes.add(`${e.size}:${e.mtimeNs}`)
      }
    }
    const streamed = (op: Op): boolean => {
      if (op.kind !== 'upload' || op.local.size < STREAM_MIN_BYTES) return false
      if (deletingShapes.has(`${op.local.size}:${op.local.mtimeNs}`)) return false // maybe a move: needs its id first
      // Same size as the mirror's: maybe only touched, which the whole-file id settles for ~250 bytes,
      // where asking about every group as it is read would cost ~40 bytes per 2 MiB.
      const r = this.remote.get(op.path)
      return !(r?.kind === 'file' && r.size === op.local.size)
    }
    // What is sent is let go: a pass over a big tree holds only the changes it has yet to send.
    const todo: Array<Op | null> = ops
    const preps = new Map<number, Promise<Prepared | NotReady | Error>>()
    let started = 0
    let aheadBytes = 0
    const held = (op: Extract<Op, { kind: 'upload' }>) => Math.min(op.local.size, SMALL_FILE_BYTES)
    // Reads ahead by half a window at a time, so that the small files of each half are read together.
    const startAhead = (current: number) => {
      if (started > current + PREPARE_AHEAD / 2) return
      const batch: Array<{ index: number; path: string; size: number }> = []
      for (; started < todo.length && started <= current + PREPARE_AHEAD; started++) {
        const op = todo[started]!
        if (op.kind !== 'upload' || streamed(op)) continue
        if (started > current && aheadBytes >= PREPARE_AHEAD_BYTES) break
        aheadBytes += held(op)
        if (op.local.size <= BATCH_READ_BYTES) batch.push({ index: started, path: op.path, size: op.local.size })
        else preps.set(started, this.prepare(op.path).catch((e: Error) => e))
      }
      if (batch.length === 0) return
      const read = readSmallFilesDigest(
        batch.map((b) => join(this.opts.root, b.path)),
        batch.map((b) => b.size),
      )
      batch.forEach((b, k) => preps.set(b.index, read.then((files) => this.prepare(b.path, files[k])).catch((e: Error) => e)))
    }
    const cancelled = new Set<string>()
    for (let i = 0; i < todo.length; i++) {
      startAhead(i)
      const op = todo[i]!
      todo[i] = null
      if (op.kind === 'upload' && streamed(op)) {
        await this.streamUpload(op.path, op.local)
      } else if (op.kind === 'upload') {
        const prep = await preps.get(i)!
        preps.delete(i)
        await this.upload(op.path, op.local, prep, deleting, cancelled)
        aheadBytes -= held(op)
      } else if (op.kind === 'dirattr' && (await this.movedSinceScan(op))) {
        this.dirty.add(op.path) // listed before its last change: look again, then set its mtime
      } else if (!(op.kind === 'delete' && cancelled.has(op.path))) {
        this.sendChange(op)
      }
    }
  }

  /**
   * Whether a directory's mtime moved since this pass read it. An entry made in it since then may be
   * one the watcher never reports (made before the new directory's watch was in place), yet the scan
   * saw it; the directory's own mtime is then the only sign that the pass is behind.
   */
  private async movedSinceScan(op: Extract<Op, { kind: 'dirattr' }>): Promise<boolean> {
    try {
      return (await lstat(join(this.opts.root, op.path), { bigint: true })).mtimeNs !== op.mtimeNs
    } catch {
      return false // gone: the watcher reports that
    }
  }

  /** A big new file, read and sent in one pass (see stream-upload.ts). */
  private async streamUpload(path: string, local: LocalEntry): Promise<void> {
    const conn = this.conn!
    const uploadId = await conn.openUpload()
    let r: StreamedFile | null
    try {
      r = await streamNewFile(join(this.opts.root, path), conn, this.opts.known, uploadId)
    } catch (err) {
      conn.abort(uploadId)
      if (err instanceof ConnectionError) throw err
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT' || code === 'ELOOP' || code === 'ENOTDIR') return // gone: the watcher reports what replaced it
      throw err
    }
    if (!r) {
      conn.abort(uploadId) // changed while it was read
      this.retryLater(path)
      return
    }
    this.opts.stats.dataBytesSent += r.dataBytes
    if (this.remote.hasContentAt(path, hashKey(r.contentId))) {
      // the same bytes as the mirror's (a touch): drop the upload, set the attributes
      conn.abort(uploadId)
      this.sendChange({ kind: 'setattr', path, mode: local.mode, mtimeNs: r.identity.mtimeNs })
      return
    }
    void this.commit(uploadId, path, local, r.identity, r.tree, r.refs)
  }

  /** Reads (unless `read` is what a batch read found) and digests a file, and finds out what to send. */
  private async prepare(path: string, read?: PreparedFile | null): Promise<Prepared | NotReady> {
    const file = read ?? (await readFileDigest(join(this.opts.root, path)))
    if (file.kind !== 'ready') return file
    if (this.remote.hasContentAt(path, hashKey(file.contentId))) return { kind: 'prepared', file, spans: [] } // same content
    return { kind: 'prepared', file, spans: await negotiate(file.tree, this.conn!, this.opts.known) }
  }

  private async upload(path: string, local: LocalEntry, prep: Prepared | NotReady | Error, deleting: Map<string, string>, cancelled: Set<string>): Promise<void> {
    const conn = this.conn!
    if (prep instanceof Error) throw prep
    if (prep.kind === 'gone') return // the watcher reports what replaced it
    if (prep.kind === 'unstable') {
      this.opts.log.warn(`${path} keeps changing while it is read; will try again`)
      this.retryLater(path)
      return
    }
    const { file } = prep
    const id = file.identity
    const contentKey = hashKey(file.contentId)
    // Same bytes as the mirror's: only the attributes differ (a touch, a chmod).
    if (this.remote.hasContentAt(path, contentKey)) {
      this.sendChange({ kind: 'setattr', path, mode: local.mode, mtimeNs: id.mtimeNs })
      return
    }
    // The same bytes under a name this pass deletes: a move the watcher did not pair (or a restart).
    const movedFrom = deleting.get(contentKey)
    if (movedFrom !== undefined && movedFrom !== path && !cancelled.has(movedFrom)) {
      const old = this.remote.get(movedFrom)
      if (old?.kind === 'file' && old.size === id.size) {
        cancelled.add(movedFrom)
        deleting.delete(contentKey)
        this.sendChange({ kind: 'rename', from: movedFrom, to: path })
        if (old.mtimeNs !== id.mtimeNs || old.mode !== appliedMode('file', local.mode)) {
          this.sendChange({ kind: 'setattr', path, mode: local.mode, mtimeNs: id.mtimeNs })
        }
        return
      }
    }
    let spans = prep.spans
    // What this upload sends: the content, and the chunks it sends as data (one chunk: the same id).
    const sending = (spans: readonly Span[]): string[] => {
      const keys = [contentKey]
      for (const s of spans) {
        if (s.ref) continue
        const key = hashKey(s.id)
        if (key !== contentKey) keys.push(key)
      }
      return keys
    }
    let keys = sending(spans)
    // Content an earlier upload of this pass is still sending: wait for it, then refer to it.
    const waits: Array<Promise<boolean>> = []
    for (const key of keys) {
      const wait = this.inflight.get(key)
      if (wait) waits.push(wait)
    }
    if (waits.length > 0) {
      await Promise.all(waits)
      spans = await negotiate(file.tree, conn, this.opts.known)
      keys = sending(spans)
    }
    let settle!: (ok: boolean) => void
    const done = new Promise<boolean>((resolve) => (settle = resolve))
    const claimed: string[] = []
    for (const key of keys) {
      if (!this.inflight.has(key)) {
        this.inflight.set(key, done)
        claimed.push(key)
      }
    }
    const release = (ok: boolean) => {
      for (const key of claimed) if (this.inflight.get(key) === done) this.inflight.delete(key)
      settle(ok)
    }

    let uploadId: number
    try {
      uploadId = await conn.openUpload()
    } catch (err) {
      release(false) // else an upload of the same content on the next connection waits for this one forever
      throw err
    }
    try {
      const { dataBytes, changed } = await streamSpans(file, spans, conn, uploadId)
      // Copied into the connection's frames by now. Whatever still holds this file (its commit, a
      // promise) must not keep its bytes, nor their slab, from the next scavenge.
      file.bytes = null
      this.opts.stats.dataBytesSent += dataBytes
      if (changed) {
        conn.abort(uploadId)
        release(false)
        this.retryLater(path)
        return
      }
    } catch (err) {
      conn.abort(uploadId)
      release(false)
      throw err
    }
    const refs = spans.filter((s) => s.ref).map((s) => s.id)
    void this.commit(uploadId, path, local, id, file.tree, refs).then(release)
  }

  /**
   * Ends an upload with its COMMIT and follows the reply: on success, every id of the file's tree is
   * known to be on the server; if a REF was refused as missing, those ids are forgotten. Resolves with
   * whether the commit succeeded.
   */
  private commit(uploadId: number, path: string, local: LocalEntry, id: FileIdentity, tree: ContentTree, refs: readonly Buffer[]): Promise<boolean> {
    const reply = this.conn!.commit({ type: 'commit', uploadId, path, mode: local.mode, mtimeNs: id.mtimeNs, size: id.size, contentId: tree.contentId })
    // the scan's mtime, when the file still has it: the model outlives the scan, and keeps one copy
    const mtimeNs = id.mtimeNs === local.mtimeNs ? local.mtimeNs : id.mtimeNs
    const contentKey = hashKey(tree.contentId)
    // A one-shot run's later passes only retry what failed, which they upload again whatever the model
    // says: the model need not hold the files it sends. On a first sync of 100,000 files (benchmark W2)
    // they were about 15 MB of sfmc's live heap at the end. Only what was at the path goes.
    if (this.once) this.remote.delete(path)
    else this.remote.set({ kind: 'file', path, mode: appliedMode('file', local.mode), mtimeNs, size: id.size, contentKey })
    // Only these live until the reply, not the tree: a thousand commits can be waiting, long enough
    // for what they hold to reach the old generation.
    const learned = treeIds(tree)
    const size = id.size
    return this.track(reply, 'upload', path, undefined, (o) => {
      if (o.ok) {
        // the content id is the last of the tree's ids: the cache shares the model's key for it
        const last = learned.length - HASH_BYTES
        for (let at = 0; at < last; at += HASH_BYTES) this.opts.known.add(learned.subarray(at, at + HASH_BYTES))
        if (last >= 0) this.opts.known.addKey(contentKey)
        this.opts.stats.files++
        this.opts.stats.bytes += size
      } else if (o.code === 'SFM_ERR_MISSING') {
        for (const ref of refs) this.opts.known.forget(ref)
      }
    })
  }

  private sendChange(op: Exclude<Op, { kind: 'upload' }>): void {
    const conn = this.conn!
    let make: (id: number) => ClientMessage
    let what: string = op.kind
    const path = op.kind === 'rename' ? op.to : op.path
    switch (op.kind) {
      case 'mkdir':
        make = (id) => ({ type: 'mkdir', requestId: id, path: op.path, mode: op.mode, mtimeNs: op.mtimeNs })
        this.remote.set({ kind: 'dir', path: op.path, mode: appliedMode('dir', op.mode), mtimeNs: op.mtimeNs })
        break
      case 'symlink':
        make = (id) => ({ type: 'symlink', requestId: id, path: op.path, target: op.target, mtimeNs: op.mtimeNs })
        this.remote.set({ kind: 'symlink', path: op.path, mode: 0, mtimeNs: op.mtimeNs, target: op.target })
        break
      case 'setattr':
      case 'dirattr': {
        make = (id) => ({ type: 'setattr', requestId: id, path: op.path, mode: op.mode, mtimeNs: op.mtimeNs })
        const r = this.remote.get(op.path)
        if (r && r.kind !== 'unknown') this.remote.set({ ...r, mode: appliedMode(r.kind, op.mode), mtimeNs: op.mtimeNs })
        what = 'attributes'
        break
      }
      case 'rename':
        make = (id) => ({ type: 'rename', requestId: id, from: op.from, to: op.to })
        if (this.remote.has(op.from)) this.remote.move(op.from, op.to)
        this.opts.stats.renames++
        break
      case 'delete': {
        make = (id) => ({ type: 'delete', requestId: id, path: op.path })
        const ino = this.vanished.get(op.path)
        if (ino !== undefined) {
          const entries = [op.path, ...this.remote.below(op.path)].map((p) => this.remote.get(p)!).filter((e) => e && e.kind !== 'unknown')
          if (entries.length > 0) this.deleted.set(ino, { path: op.path, entries, at: Date.now() })
        }
        this.remote.delete(op.path)
        this.opts.stats.deletes++
        break
      }
    }
    this.opts.stats.changes++
    // a refused RENAME leaves `from` on the server: both ends need another look
    void this.track(conn.change(make), what, path, op.kind === 'rename' ? op.from : undefined)
  }

  /**
   * Follows a reply: `first` sees the outcome, then success is reported and failure puts the path (and
   * `alsoPath`) back for another pass. Resolves with whether the change succeeded; false when the
   * connection ended (the next connection reconciles everything).
   */
  private track(reply: Promise<Outcome>, what: string, path: string, alsoPath?: string, first?: (o: Outcome) => void): Promise<boolean> {
    this.awaited++
    return reply.then(
      (o) => {
        first?.(o)
        this.answered()
        if (o.ok) {
          this.attempts.delete(path)
          this.gaveUp.delete(path)
          this.opts.onApplied?.(what, path)
          return true
        }
        this.opts.stats.failures++
        this.opts.log.warn(`server refused ${what} of ${path}: ${o.message}`, { code: o.code })
        for (const again of alsoPath === undefined ? [path] : [path, alsoPath]) {
          this.remote.markUnknown(again)
          this.retryLater(again)
        }
        return false
      },
      () => {
        this.answered()
        return false
      },
    )
  }

  private answered(): void {
    if (--this.awaited === 0) this.allAnswered?.()
  }

  private retryLater(path: string): void {
    const n = (this.attempts.get(path) ?? 0) + 1
    this.attempts.set(path, n)
    if (n >= MAX_ATTEMPTS) {
      if (n === MAX_ATTEMPTS) {
        const later = this.once ? 'it will be retried when it changes' : 'trying again less often (and whenever it changes)'
        this.opts.log.error(`giving up on ${path} for now after ${n} attempts; ${later}`)
      }
      this.gaveUp.add(path)
      // a full disk or a server-side fault clears up without the file changing: keep trying, slowly
      if (!this.once) {
        const delay = Math.min(SLOW_RETRY_MAX_MS, SLOW_RETRY_MS * 2 ** (n - MAX_ATTEMPTS))
        setTimeout(() => {
          if (!this.gaveUp.has(path)) return // changed meanwhile: already retried
          this.dirty.add(path)
          this.wake?.()
        }, delay).unref()
      }
      return
    }
    const delay = 50 * 2 ** n
    this.awaited++ // keep `drain` (and so --once) waiting until the retry has run
    setTimeout(() => {
      this.dirty.add(path)
      this.answered()
      this.wake?.()
    }, delay).unref()
  }
}

/**
 * Whether an entry that vanished (remote) and one that appeared (local) with its inode are the same
 * thing moved. Inodes are reused at once after a delete, so the inode alone proves nothing: the kind
 * and the mtime (which a rename keeps) must match too, and for files the size, for symlinks the target.
 */
function sameThing(r: RemoteEntry, l: LocalEntry): boolean {
  if (r.kind !== l.kind || r.mtimeNs !== l.mtimeNs) return false
  if (r.kind === 'file') return r.size === l.size
  if (r.kind === 'symlink') return r.target === l.target
  return true
}

/** The paths not below another path of the set. */
function topmost(paths: Set<string>): string[] {
  return [...paths].filter((p) => {
    for (let q = parentOf(p); q !== null; q = parentOf(q)) if (paths.has(q)) return false
    return true
  })
}
