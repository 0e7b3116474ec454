// One connection to sfmd: the handshake, then requests matched to replies by id, within the limits the
// server announced (requests in flight, open uploads), with keepalive and socket backpressure.
import { randomBytes } from 'node:crypto'
import net from 'node:net'
import type { TLSSocket } from 'node:tls'
import {
  DIGEST_VERSION,
  ERROR_CODE,
  MAGIC,
  MAX_FRAME_BYTES,
  MAX_HASHES,
  errorName,
  type ErrorName,
} from '../protocol/constants.js'
import { FrameDecoder } from '../protocol/framer.js'
import { FrameWriter } from '../protocol/frame-writer.js'
import type { ClientMessage, Commit, ListEntry, Message, Ref, ServerMessage, Welcome } from '../protocol/messages.js'
import type { Logger } from '../log.js'
import { Semaphore } from '../util/semaphore.js'
import { ClientMachine, type ClientAction, type ClientIdentity } from './machine.js'

/** Socket bytes queued before a sender waits for them to drain. */
const SEND_HIGH_WATER_BYTES = 1 << 20
/** Queued HAVE? ids that are sent without waiting for the end of the turn (see have()). */
const HAVE_SEND_NOW_IDS = 64
const CONNECT_TIMEOUT_MS = 10_000

export interface TlsOptions {
  ca?: Buffer
  /** SHA-256 of the server certificate (hex, colons optional): pins it instead of a CA. */
  fingerprint?: string
}

export interface ConnectOptions {
  host: string
  port: number
  tls?: TlsOptions
  identity: Omit<ClientIdentity, 'clientNonce'>
  log: Logger
}

/** Why a connection could not be made or ended; `retry` says whether trying again can help. */
export class ConnectionError extends Error {
  constructor(
    readonly code: ErrorName | 'SFM_ERR_UNKNOWN' | 'SFM_ERR_NOT_SFM' | 'SFM_ERR_NETWORK' | 'SFM_ERR_NO_GREETING',
    message: string,
    readonly retry: boolean,
  ) {
    super(message)
    this.name = 'ConnectionError'
  }
}

export type Outcome = { ok: true } | { ok: false; code: ErrorName | 'SFM_ERR_UNKNOWN'; message: string }

type Pending =
  | { kind: 'outcome'; resolve: (o: Outcome) => void; reject: (e: Error) => void }
  | { kind: 'have'; count: number; resolve: (have: readonly boolean[]) => void; reject: (e: Error) => void }
  | { kind: 'list'; entries: ListEntry[]; resolve: (e: ListEntry[]) => void; reject: (e: Error) => void }
  | { kind: 'digest'; resolve: (digest: Buffer) => void; reject: (e: Error) => void }

// Connection-level codes that retrying cannot fix without a change of configuration.
const FATAL: ReadonlySet<string> = new Set(['SFM_ERR_VERSION', 'SFM_ERR_HASH_ALGO', 'SFM_ERR_AUTH_FAILED', 'SFM_ERR_AUTH_REQUIRED'])

export class Connection {
  welcome!: Welcome
  /** Resolves when the connection ends, with the reason. */
  readonly closed: Promise<ConnectionError>
  private resolveClosed!: (e: ConnectionError) => void
  private readonly machine: ClientMachine
  private readonly decoder = new FrameDecoder({ maxFrameBytes: MAX_FRAME_BYTES, expectMagic: true })
  private readonly writer: FrameWriter
  private readonly pending = new Map<number, Pending>()
  private inflight!: Semaphore
  private uploads!: Semaphore
  private lastId = 0
  private ended: ConnectionError | null = null
  private keepalive: NodeJS.Timeout | null = null
  private deadline: NodeJS.Timeout | null = null
  private onReady: ((w: Welcome) => void) | null = null
  private haveQueue: Array<{ hash: Buffer; query: HaveQuery; index: number }> = []
  private haveFlush: NodeJS.Immediate | null = null

  private constructor(
    private readonly socket: net.Socket,
    identity: ClientIdentity,
    private readonly log: Logger,
  ) {
    this.machine = new ClientMachine(identity)
    this.writer = new FrameWriter(socket)
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve))
  }

  static async open(opts: ConnectOptions): Promise<Connection> {
    const identity = { ...opts.identity, clientNonce: randomBytes(16) }
    const socket = opts.tls ? await tlsConnect(opts.host, opts.port, opts.tls) : net.connect({ host: opts.host, port: opts.port })
    const conn = new Connection(socket, identity, opts.log)
    return conn.handshake(opts)
  }

  private handshake(opts: ConnectOptions): Promise<Connection> {
    const socket = this.socket
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.end(new ConnectionError('SFM_ERR_TIMEOUT', `no answer from ${opts.host}:${opts.port}`, true)), CONNECT_TIMEOUT_MS)
      this.onReady = (w) => {
        clearTimeout(timer)
        this.welcome = w
        this.inflight = new Semaphore(w.maxInflight)
        this.uploads = new Semaphore(w.maxOpenUploads)
        this.startKeepalive(w.keepaliveMs)
        resolve(this)
      }
      void this.closed.then((err) => {
        clearTimeout(timer)
        reject(err)
      })
      const start = () => {
        if (opts.tls?.fingerprint) {
          const want = opts.tls.fingerprint.replace(/:/g, '').toLowerCase()
          const got = (socket as TLSSocket).getPeerCertificate().fingerprint256?.replace(/:/g, '').toLowerCase()
          if (got !== want) {
            return this.end(new ConnectionError('SFM_ERR_AUTH_FAILED', `server certificate fingerprint ${got} does not match --tls-fingerprint`, false))
          }
        }
        socket.setNoDelay(true)
        socket.write(MAGIC) // [M-LIFE-1]
        this.send(this.machine.hello())
      }
      socket.once(opts.tls ? 'secureConnect' : 'connect', start)
      socket.on('data', (d) => this.onData(d))
      socket.on('error', (err: NodeJS.ErrnoException) => this.end(networkError(err, opts.host, opts.port, Boolean(opts.tls))))
      socket.on('close', () => {
        // An sfm server greets at once (MAGIC); a close before any byte is a TLS server seeing plain
        // bytes, or a server refusing connections for a moment. The caller decides after a few.
        if (this.socket.bytesRead === 0 && !opts.tls) {
          this.end(new ConnectionError('SFM_ERR_NO_GREETING', `${opts.host}:${opts.port} closed the connection without greeting: if it is a TLS server, use --tls`, true))
        } else this.end(new ConnectionError('SFM_ERR_NETWORK', 'connection closed by the server', true))
      })
    })
  }

  // ------------------------------------------------------------------------------------------
  // Requests

  nextId(): number {
    this.lastId = this.lastId >= 0xffffffff ? 1 : this.lastId + 1
    return this.lastId
  }

  /**
   * Which of these ids the server has, in order. Queries made in the same turn of the event loop (many
   * small files read together) share HAVE? frames of up to MAX_HASHES ids: one round trip, not one each.
   * From HAVE_SEND_NOW_IDS queued ids on, the frame goes out at once, with what was sent before it: a
   * caller that keeps sending files without yielding (all read ahead) would otherwise hold its next
   * questions until it runs out of answers, and wait a whole round trip each time.
   */
  have(hashes: readonly Buffer[]): Promise<boolean[]> {
    if (hashes.length === 0) return Promise.resolve([])
    return new Promise((resolve, reject) => {
      const answers = new Array<boolean>(hashes.length)
      const query: HaveQuery = { answers, left: hashes.length, resolve, reject }
      hashes.forEach((hash, i) => this.haveQueue.push({ hash, query, index: i }))
      if (this.haveQueue.length >= HAVE_SEND_NOW_IDS) {
        this.flushHave()
        this.writer.flush()
      } else this.haveFlush ??= setImmediate(() => this.flushHave())
    })
  }

  private flushHave(): void {
    if (this.haveFlush) clearImmediate(this.haveFlush)
    this.haveFlush = null
    const queue = this.haveQueue
    this.haveQueue = []
    for (let i = 0; i < queue.length; i += MAX_HASHES) {
      const part = queue.slice(i, i + MAX_HASHES)
      const hashes = part.map((q) => q.hash)
      this.request((id) => ({ type: 'haveQuery', requestId: id, hashes }), 'have').then(
        (have) => {
          part.forEach((q, k) => {
            q.query.answers[q.index] = have[k]!
            if (--q.query.left === 0) q.query.resolve(q.query.answers)
          })
        },
        (err: Error) => {
          for (const q of part) q.query.reject(err)
        },
      )
    }
  }

  list(): Promise<ListEntry[]> {
    return this.request((id) => ({ type: 'list', requestId: id }), 'list')
  }

  /** Whether the server speaks DIGEST? (protocol version 2 on). */
  get hasDigest(): boolean {
    return this.welcome.version >= DIGEST_VERSION
  }

  /** The mirror digest (PROTOCOL.md 5.5), after every change sent before this call. */
  digest(): Promise<Buffer> {
    return this.request((id) => ({ type: 'digestQuery', requestId: id }), 'digest')
  }

  /** Sends a change (DELETE, MKDIR, SYMLINK, RENAME, SETATTR) and resolves with its outcome. */
  change(make: (requestId: number) => ClientMessage): Promise<Outcome> {
    return this.request(make, 'outcome')
  }

  /**
   * Ends an upload; its reply comes under the upload's id [M-COMMIT-5]. Once the COMMIT is sent the
   * upload no longer counts as open (it counts as a request in flight): its slot is given back then,
   * not at the reply, so the pipeline is not limited to max_open_uploads files waiting for the disk.
   */
  commit(msg: Commit): Promise<Outcome> {
    return this.request(() => msg, 'outcome', msg.uploadId, () => this.uploads.release())
  }

  /**
   * Sends a request and returns its reply promise. Waits for a free slot first, so the number of
   * requests in flight never exceeds the server's max_inflight [M-WELCOME-3].
   */
  private request<K extends Pending['kind']>(make: (id: number) => ClientMessage, kind: K, givenId?: number, onSent?: () => void): Promise<ResultOf<K>> {
    // With a slot free, one promise per request: a thousand can be waiting for their replies, long
    // enough for what each holds to reach V8's old generation.
    if (this.inflight.tryAcquire()) return this.sendRequest(make, kind, givenId, onSent)
    return this.inflight.acquire().then(() => this.sendRequest(make, kind, givenId, onSent))
  }

  private sendRequest<K extends Pending['kind']>(make: (id: number) => ClientMessage, kind: K, givenId?: number, onSent?: () => void): Promise<ResultOf<K>> {
    return new Promise<ResultOf<K>>((resolve, reject) => {
      this.check() // a throw here rejects the request
      const id = givenId ?? this.nextId()
      const msg = make(id)
      const entry = (
        msg.type === 'haveQuery' ? { kind, count: msg.hashes.length, resolve, reject } : kind === 'list' ? { kind, entries: [], resolve, reject } : { kind, resolve, reject }
      ) as Pending
      this.pending.set(id, entry)
      this.send(msg)
      onSent?.()
    })
  }

  /** The reply to a request is complete: its slot is free (on the connection's end, all are). */
  private settled(requestId: number): void {
    this.pending.delete(requestId)
    this.inflight.release()
  }

  /** An upload slot, taken in the order asked; COMMIT or ABORT gives it back. */
  async openUpload(): Promise<number> {
    await this.uploads.acquire()
    this.check()
    return this.nextId()
  }

  chunk(uploadId: number, hash: Buffer, data: Buffer): void {
    this.check()
    this.send({ type: 'chunk', uploadId, hash, data })
  }

  refs(uploadId: number, refs: readonly Ref[]): void {
    this.check()
    for (let i = 0; i < refs.length; i += MAX_HASHES) this.send({ type: 'refs', uploadId, refs: refs.slice(i, i + MAX_HASHES) })
  }

  /** Calls `done` once the data of every CHUNK sent so far is out of this process's hands. */
  afterWritten(done: () => void): void {
    this.writer.afterWritten(done)
  }

  /** Abandons an upload (or one never started: an upload whose streaming failed) and frees its slot. */
  abort(uploadId: number): void {
    if (!this.ended) this.send({ type: 'abort', uploadId })
    this.uploads.release()
  }

  /** Resolves when the socket has room again; callers streaming data await it between chunks. */
  async writable(): Promise<void> {
    while (!this.ended && this.socket.writableLength > SEND_HIGH_WATER_BYTES) {
      await new Promise<void>((resolve) => {
        const done = () => {
          this.socket.off('drain', done)
          resolve()
        }
        this.socket.on('drain', done)
        void this.closed.then(done)
      })
    }
    this.check()
  }

  close(): void {
    this.end(new ConnectionError('SFM_ERR_SHUTDOWN', 'closed by the client', false))
  }

  get isOpen(): boolean {
    return this.ended === null
  }

  // ------------------------------------------------------------------------------------------

  private check(): void {
    if (this.ended) throw this.ended
  }

  /** Bytes on the wire so far, framing and TLS included. */
  get wireBytesSent(): number {
    return this.socket.bytesWritten
  }

  get wireBytesReceived(): number {
    return this.socket.bytesRead
  }

  private onData(data: Buffer): void {
    this.deadline?.refresh()
    const { messages, error } = this.decoder.push(data)
    for (const msg of messages) this.act(this.machine.receive(msg))
    if (error) {
      if (error.code === 'SFM_ERR_BAD_MAGIC') {
        this.end(new ConnectionError('SFM_ERR_NOT_SFM', `${this.socket.remoteAddress}:${this.socket.remotePort} is not an sfm server`, false))
      } else this.act(this.machine.fail(error.code, `bad data from the server: ${error.message}`))
    }
  }

  private act(actions: ClientAction[]): void {
    for (const a of actions) {
      switch (a.kind) {
        case 'send':
          this.send(a.message)
          break
        case 'ready':
          this.decoder.useVersion(a.welcome.version)
          this.onReady?.(a.welcome)
          break
        case 'reply':
          this.onReply(a.message)
          break
        case 'fail':
          if (a.notify) this.send({ type: 'error', requestId: 0, code: ERROR_CODE[a.code], message: a.message })
          this.end(new ConnectionError(a.code, a.message, !FATAL.has(a.code)))
          break
        case 'refused':
          this.end(new ConnectionError(a.code, `server: ${a.message}`, !FATAL.has(a.code)))
          break
      }
    }
  }

  private onReply(msg: Extract<ServerMessage, { requestId: number }>): void {
    const p = this.pending.get(msg.requestId)
    if (!p) {
      this.act(this.machine.fail('SFM_ERR_BAD_ID', `reply for unknown request ${msg.requestId}`)) // [M-ID-3]
      return
    }
    if (msg.type === 'error') {
      this.settled(msg.requestId)
      const o: Outcome = { ok: false, code: errorName(msg.code), message: msg.message }
      if (p.kind === 'outcome') p.resolve(o)
      else p.reject(new ConnectionError(o.code, msg.message, true))
      return
    }
    if (p.kind === 'outcome' && msg.type === 'ok') {
      this.settled(msg.requestId)
      p.resolve({ ok: true })
    } else if (p.kind === 'have' && msg.type === 'haveReply') {
      if (msg.have.length !== p.count) {
        this.act(this.machine.fail('SFM_ERR_MALFORMED', `HAVE_REPLY ${msg.requestId} answers ${msg.have.length} of ${p.count} hashes`)) // [M-HAVE-2]
        return
      }
      this.settled(msg.requestId)
      p.resolve(msg.have)
    } else if (p.kind === 'digest' && msg.type === 'digestReply') {
      this.settled(msg.requestId)
      p.resolve(msg.digest)
    } else if (p.kind === 'list' && msg.type === 'listing') {
      for (const e of msg.entries) p.entries.push(e)
      if (msg.last) {
        this.settled(msg.requestId)
        p.resolve(p.entries)
      }
    } else {
      this.act(this.machine.fail('SFM_ERR_UNEXPECTED', `${msg.type} is not a reply to request ${msg.requestId}`))
    }
  }

  private send(msg: Message): void {
    this.keepalive?.refresh()
    this.writer.send(msg)
  }

  private startKeepalive(ms: number): void {
    this.keepalive = setInterval(() => this.send({ type: 'ping' }), ms)
    this.keepalive.unref()
    // A server that answers nothing (not even PONG) for three intervals is gone [M-LIFE-5].
    this.deadline = setTimeout(() => this.end(new ConnectionError('SFM_ERR_TIMEOUT', 'the server stopped answering', true)), 3 * ms)
    this.deadline.unref()
  }

  private end(err: ConnectionError): void {
    if (this.ended) return
    this.ended = err
    if (this.keepalive) clearInterval(this.keepalive)
    if (this.deadline) clearTimeout(this.deadline)
    this.writer.flush()
    this.socket.end()
    setTimeout(() => this.socket.destroy(), 1_000).unref()
    for (const p of this.pending.values()) p.reject(err)
    this.pending.clear()
    if (this.haveFlush) clearImmediate(this.haveFlush)
    this.haveFlush = null
    for (const q of this.haveQueue.splice(0)) q.query.reject(err)
    this.inflight?.drain()
    this.uploads?.drain()
    this.resolveClosed(err)
  }
}

interface HaveQuery {
  answers: boolean[]
  left: number
  resolve: (answers: boolean[]) => void
  reject: (err: Error) => void
}

type ResultOf<K> = K extends 'outcome'
  ? Outcome
  : K extends 'have'
    ? readonly boolean[]
    : K extends 'list'
      ? ListEntry[]
      : K extends 'digest'
        ? Buffer
        : never

/** node:tls takes about 6 ms to load: only a connection with --tls pays for it. */
async function tlsConnect(host: string, port: number, opts: TlsOptions): Promise<TLSSocket> {
  const tls = await import('node:tls')
  return tls.connect({
    host,
    port,
    ca: opts.ca,
    servername: net.isIP(host) ? undefined : host,
    // With a pinned fingerprint the certificate itself is the identity: no CA is consulted.
    rejectUnauthorized: !opts.fingerprint,
    checkServerIdentity: opts.fingerprint ? () => undefined : tls.checkServerIdentity,
  })
}

function networkError(err: NodeJS.ErrnoException, host: string, port: number, tlsUsed: boolean): ConnectionError {
  const firstLine = (err.message.split('\n')[0] ?? '').replace(/^.*routines::?/, '').trim()
  if (tlsUsed && (err.code === 'ERR_SSL_WRONG_VERSION_NUMBER' || err.code?.startsWith('ERR_SSL_'))) {
    return new ConnectionError('SFM_ERR_AUTH_FAILED', `TLS with ${host}:${port} failed (${err.code}): the server does not seem to speak TLS; drop --tls or start sfmd with --tls-cert/--tls-key`, false)
  }
  switch (err.code) {
    case 'ECONNREFUSED':
      return new ConnectionError('SFM_ERR_NETWORK', `nothing is listening on ${host}:${port} (is sfmd running?)`, true)
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new ConnectionError('SFM_ERR_NETWORK', `cannot resolve host ${host}`, true)
    default:
      if (err.code?.startsWith('ERR_TLS') || err.code === 'DEPTH_ZERO_SELF_SIGNED_CERT' || err.code === 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' || err.code === 'SELF_SIGNED_CERT_IN_CHAIN' || err.code === 'CERT_HAS_EXPIRED') {
        return new ConnectionError('SFM_ERR_AUTH_FAILED', `TLS: ${firstLine}`, false)
      }
      return new ConnectionError('SFM_ERR_NETWORK', `${host}:${port}: ${firstLine}`, true)
  }
}
