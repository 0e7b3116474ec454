// sfmc as an object: one folder mirrored to one server. Watches the folder (unless --once), connects,
// and on every connection reconciles and then streams changes; reconnects with backoff when the
// connection is lost, and stops with an error when the folder disappears.
import { realpath } from 'node:fs/promises'
import { hostname, tmpdir, userInfo } from 'node:os'
import { join, resolve } from 'node:path'
import { EXIT, FatalError } from '../fatal.js'
import { hash128 } from '../hash.js'
import type { Logger } from '../log.js'
import { MAX_CLIENT_NAME_BYTES } from '../protocol/constants.js'
import { fitUtf8 } from '../protocol/text.js'
import { VERSION } from '../util/version.js'
import { MemoryTrim } from '../util/memory-trim.js'
import { LockHeld, PidLock } from '../util/pid-lock.js'
import { Connection, ConnectionError, type TlsOptions } from './connection.js'
import { IgnoreRules } from './ignore-rules.js'
import { KnownContent, type CacheLimits } from './known.js'
import { checkRootIdentity, defaultStateDir, RootRecord, type DeleteLimit } from './safety.js'
import { SyncStats } from './stats.js'
import { RootChangedError, Syncer } from './syncer.js'
import type { FolderWatch, WatchError } from './watch.js'

export interface ClientOptions {
  root: string
  host: string
  port: number
  once: boolean
  token: Buffer | null
  tls?: TlsOptions
  /** Bounds of the LRU of ids the server is known to have. */
  cache?: CacheLimits
  /** With --once: stop trying to connect after this long without a connection. */
  giveUpAfterMs?: number
  log: Logger
  onApplied?: (what: string, path: string) => void
  /** Called after each reconcile with the statistics so far. */
  onReconciled?: (stats: SyncStats) => void
  /** Where the identity of the mirrored folder is remembered; null turns the check off. */
  stateDir?: string | null
  /** Accept a folder other than the one recorded last time (and record it). */
  acceptNewRoot?: boolean
  allowEmpty?: boolean
  deleteLimit?: DeleteLimit
  /** Patterns (gitignore syntax) ignored besides those of .sfmignore. */
  ignore?: readonly string[]
  /** --dry-run: report what one reconcile would do, and change nothing. */
  dryRun?: (line: string) => void
  /** --poll: no watcher; look at the whole folder every this many ms. */
  pollMs?: number
  /**
   * While watching, also look at the whole folder every this many ms (0: never), in case the watcher
   * lost an event; default an hour.
   */
  rescanMs?: number
}

const BACKOFF_FIRST_MS = 250
const BACKOFF_MAX_MS = 15_000
/** How often the whole folder is looked at when the watcher cannot see all of it. */
const RESCAN_MS = 30_000
const DEFAULT_SAFETY_RESCAN_MS = 3_600_000

export class SfmClient {
  readonly stats = new SyncStats()
  private stopped = false
  private conn: Connection | null = null
  private watch: FolderWatch | null = null
  private fatal: Error | null = null
  private wakeRetry: (() => void) | null = null
  private lockFile: PidLock | null = null
  private counted = { sent: 0, received: 0 }
  private rescanTimer: NodeJS.Timeout | null = null
  private readonly memory = new MemoryTrim()

  constructor(private readonly opts: ClientOptions) {}

  /** Runs until stop() (exit 0), the end of --once, or a fatal error (thrown as FatalError). */
  async run(): Promise<number> {
    const o = this.opts
    const root = resolve(o.root)
    let real: string
    try {
      real = await realpath(root)
    } catch {
      throw new FatalError(`the folder ${root} does not exist`, EXIT.ENVIRONMENT)
    }
    const id = hash128(Buffer.from(`${hostname()}\0${real}\0${process.getuid?.() ?? 0}`))
    await this.lock(id)
    try {
      await checkRootIdentity({
        root: real,
        record: o.stateDir === null ? null : new RootRecord(o.stateDir ?? defaultStateDir(process.env), id),
        accept: o.acceptNewRoot ?? false,
        wait: !o.once,
        onWaiting: (message) => o.log.warn(message),
        stopped: () => this.stopped,
      }).catch((err: unknown) => {
        if ((err as { code?: string }).code === 'SFM_ROOT_GONE') throw new FatalError((err as Error).message, EXIT.ENVIRONMENT)
        throw err
      })
      if (this.stopped) return EXIT.OK
      const syncer = new Syncer({
        dryRun: o.dryRun,
        ignore: new IgnoreRules(real, o.ignore ?? []),
        deleteLimit: o.deleteLimit,
        allowEmpty: o.allowEmpty,
        root: real,
        log: o.log,
        known: new KnownContent(o.cache),
        stats: this.stats,
        onApplied: o.onApplied,
        onReconciled: () => {
          if (this.conn) this.collect(this.conn, false)
          o.onReconciled?.(this.stats)
        },
      })
      await syncer.pinRoot().catch(() => {
        throw new FatalError(`the folder ${root} is not a readable directory`, EXIT.ENVIRONMENT)
      })
      if (o.once) syncer.scanAhead()
      if (o.pollMs !== undefined && !o.once) this.rescanEvery(syncer, o.pollMs)
      else if (!o.once && !o.dryRun) {
        this.watch = await this.startWatch(real, syncer)
        const every = o.rescanMs ?? DEFAULT_SAFETY_RESCAN_MS
        if (every > 0 && !this.rescanTimer) this.rescanEvery(syncer, every)
      }
      const name = fitUtf8(`sfmc ${VERSION} ${userInfo().username}@${hostname()}:${real}`, MAX_CLIENT_NAME_BYTES)
      return await this.loop(syncer, { clientId: id, clientName: name, token: o.token })
    } finally {
      if (this.rescanTimer) clearInterval(this.rescanTimer)
      this.memory.stop()
      await this.watch?.close()
      await this.lockFile?.release()
    }
  }

  stop(): void {
    this.stopped = true
    this.conn?.close()
    this.wakeRetry?.()
  }

  private async loop(syncer: Syncer, identity: { clientId: Buffer; clientName: string; token: Buffer | null }): Promise<number> {
    const o = this.opts
    let backoff = BACKOFF_FIRST_MS
    let lastConnected = Date.now()
    let lastError = ''
    let noGreeting = 0 // closes before the server's greeting, in a row
    let greeted = false // a server has greeted this client since it started
    while (!this.stopped) {
      if (this.fatal) throw this.fatal
      let conn: Connection
      try {
        conn = await Connection.open({ host: o.host, port: o.port, tls: o.tls, identity, log: o.log })
      } catch (err) {
        const e = err as ConnectionError
        if (!e.retry) throw new FatalError(`cannot sync with ${o.host}:${o.port}: ${e.message}`, EXIT.REFUSED)
        noGreeting = e.code === 'SFM_ERR_NO_GREETING' ? noGreeting + 1 : 0
        // A TLS server answering plain bytes is a mistake to stop at, but only before a first greeting:
        // after one, closes without a greeting are a proxy or tunnel whose server is restarting.
        if (noGreeting >= 3 && !greeted) throw new FatalError(e.message, EXIT.REFUSED)
        if (e.message !== lastError && (e.code !== 'SFM_ERR_NO_GREETING' || greeted)) o.log.warn(`${e.message}; retrying`)
        lastError = e.message
        if (o.once && Date.now() - lastConnected > (o.giveUpAfterMs ?? 60_000)) {
          throw new FatalError(`gave up: ${e.message}`, EXIT.FAILURE)
        }
        await this.sleep(backoff)
        backoff = Math.min(backoff * 2, BACKOFF_MAX_MS)
        continue
      }
      this.conn = conn
      greeted = true
      lastError = ''
      noGreeting = 0
      o.log.info(`connected to ${o.host.includes(':') ? `[${o.host}]` : o.host}:${o.port}`)
      // a watching client runs for months: what a big sync leaves free in malloc goes back once quiet
      let wire = 0
      const trimWatch = o.once
        ? null
        : setInterval(() => {
            const now = conn.wireBytesSent + conn.wireBytesReceived
            if (now > wire) this.memory.moved(now - wire)
            wire = now
          }, 1_000).unref()
      try {
        await syncer.run(conn, o.once)
        conn.close()
        this.collect(conn)
        if (syncer.gaveUp.size > 0) {
          o.log.error(`${syncer.gaveUp.size} path(s) could not be synced`)
          return EXIT.FAILURE
        }
        return EXIT.OK
      } catch (err) {
        this.collect(conn)
        conn.close()
        if (this.stopped) break
        if (this.fatal) throw this.fatal
        if (err instanceof RootChangedError || (err as { code?: string }).code === 'SFM_ROOT_GONE') {
          throw new FatalError(`${(err as Error).message}; stopping without deleting anything on the mirror`, EXIT.FAILURE)
        }
        if (err instanceof ConnectionError) {
          if (!err.retry) throw new FatalError(`${o.host}:${o.port}: ${err.message}`, EXIT.REFUSED)
          o.log.warn(`connection lost: ${err.message}; reconnecting`)
        } else throw err
        lastConnected = Date.now()
        backoff = BACKOFF_FIRST_MS
        await this.sleep(backoff)
      } finally {
        if (trimWatch) clearInterval(trimWatch)
      }
    }
    return EXIT.OK
  }

  /** Adds the connection's wire bytes to the statistics (once per connection, at its end). */
  private collect(conn: Connection, final = true): void {
    const sent = conn.wireBytesSent - this.counted.sent
    const received = conn.wireBytesReceived - this.counted.received
    this.stats.wireBytesSent += sent
    this.stats.wireBytesReceived += received
    this.counted = final ? { sent: 0, received: 0 } : { sent: conn.wireBytesSent, received: conn.wireBytesReceived }
    if (final) this.conn = null
  }

  /** The statistics now, with the current connection's bytes so far. */
  snapshot() {
    if (this.conn) this.collect(this.conn, false)
    return this.stats.snapshot()
  }

  private async startWatch(root: string, syncer: Syncer): Promise<FolderWatch | null> {
    const onError = (err: WatchError) => {
      if (err.code !== 'SFM_ROOT_GONE') return this.rescanInstead(syncer, err.message)
      this.fatal = new FatalError(`${err.message}; stopping without deleting anything on the mirror`, EXIT.FAILURE)
      this.conn?.close()
      this.wakeRetry?.()
    }
    try {
      // loaded here, not at startup: the watcher library takes ~40 ms to load, which --once never needs
      const { watchFolder } = await import('./watch.js')
      return await watchFolder(root, (paths) => syncer.markChanged(paths), onError)
    } catch (err) {
      if ((err as WatchError).code === 'SFM_ROOT_GONE') throw new FatalError((err as Error).message, EXIT.ENVIRONMENT)
      this.rescanInstead(syncer, (err as Error).message)
      return null
    }
  }

  /**
   * The watcher cannot see the whole folder (the inotify watch limit, say): the mirror is kept correct
   * by looking at all of it every RESCAN_MS, and the message says how to fix the cause.
   */
  private rescanInstead(syncer: Syncer, why: string): void {
    this.opts.log.warn(`${why}; until then the whole folder is rescanned every ${RESCAN_MS / 1000} s`)
    this.rescanEvery(syncer, RESCAN_MS)
  }

  private rescanEvery(syncer: Syncer, ms: number): void {
    if (this.rescanTimer) clearInterval(this.rescanTimer)
    this.rescanTimer = setInterval(() => syncer.rescanAll(), ms)
    this.rescanTimer.unref()
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms)
      function done() {
        clearTimeout(t)
        resolve()
      }
      this.wakeRetry = done
    })
  }

  /** One sfmc per folder: a second would fight the first for the mirror. */
  private async lock(id: Buffer): Promise<void> {
    const lock = new PidLock(join(tmpdir(), `sfmc-${id.toString('hex').slice(0, 16)}.lock`))
    try {
      await lock.acquire()
    } catch (err) {
      if (!(err instanceof LockHeld)) throw err
      throw new FatalError(`another sfmc (pid ${err.pid}) is already mirroring this folder`, EXIT.ENVIRONMENT)
    }
    this.lockFile = lock
  }
}

