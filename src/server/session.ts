// One client connection: socket bytes through the framer into the state machine, requests to the
// mirror and the applier, replies back. One handler decides what an error does to the connection.
import type { Socket } from 'node:net'
import {
  ERROR_CODE,
  HELLO_TIMEOUT_MS,
  MAGIC,
  MAX_FRAME_BYTES,
  MAX_HANDSHAKE_FRAME_BYTES,
  type ErrorName,
} from '../protocol/constants.js'
import { FrameDecoder } from '../protocol/framer.js'
import { FrameWriter } from '../protocol/frame-writer.js'
import type { ClientMessage, ListEntry, Message } from '../protocol/messages.js'
import type { Logger } from '../log.js'
import type { Applier, Outcome } from './applier.js'
import { ServerMachine, type ServerAction, type ServerPolicy } from './machine.js'
import type { Mirror } from './mirror.js'
import { Upload, type WriteBudget } from './upload.js'

/** Bytes accepted but not yet written, per connection, before the server stops reading (PROTOCOL.md 12). */
const WRITE_HIGH_WATER_BYTES = 8 << 20
const WRITE_LOW_WATER_BYTES = 4 << 20
/**
 * Bytes of REFS queued to be copied, per connection, before the server stops reading. A queued copy
 * holds no data, only the time it will take, and the deeper the queue the longer the copies it joins
 * up. At 8 MiB, like the data, it held a client streaming a copied or grown 1 GiB file to the pace of
 * 2 MiB copies, with its HAVE? questions waiting in the paused socket (1.6-1.7 s for 1 GiB).
 */
const COPY_HIGH_WATER_BYTES = 256 << 20
const COPY_LOW_WATER_BYTES = 128 << 20
/** Entries per LISTING part: keeps each frame far below MAX_FRAME_BYTES even with long paths. */
const LISTING_BATCH_BYTES = 256 << 10

export interface SessionDeps {
  mirror: Mirror
  applier: Applier
  policy: Omit<ServerPolicy, 'peerIsLoopback' | 'claim'>
  claim(session: Session, clientId: Buffer, clientName: string): string | null
  release(session: Session): void
  log: Logger
}

export class Session {
  readonly peer: string
  clientName = ''
  private readonly machine: ServerMachine
  private readonly decoder = new FrameDecoder({ maxFrameBytes: MAX_HANDSHAKE_FRAME_BYTES, expectMagic: true })
  private readonly writer: FrameWriter
  private readonly uploads = new Map<number, Upload>()
  /** Ids with a reply still to come, and ids of open uploads [M-ID-1]. */
  private readonly outstanding = new Set<number>()
  private pendingReplies = 0
  private closed = false
  private helloTimer: NodeJS.Timeout | null
  private idleTimer: NodeJS.Timeout | null = null
  private unwritten = 0
  private uncopied = 0
  private helloDone = false
  private readonly budget: WriteBudget

  constructor(
    private readonly socket: Socket,
    private readonly deps: SessionDeps,
  ) {
    this.peer = `${socket.remoteAddress}:${socket.remotePort}`
    const loopback = isLoopback(socket.remoteAddress)
    this.machine = new ServerMachine({
      ...deps.policy,
      peerIsLoopback: loopback,
      claim: (id, name) => deps.claim(this, id, name),
    })
    this.budget = {
      take: (n, copy) => {
        if (copy) this.uncopied += n
        else this.unwritten += n
        if (this.unwritten > WRITE_HIGH_WATER_BYTES || this.uncopied > COPY_HIGH_WATER_BYTES) socket.pause()
      },
      give: (n, copy) => {
        if (copy) this.uncopied -= n
        else this.unwritten -= n
        if (this.unwritten < WRITE_LOW_WATER_BYTES && this.uncopied < COPY_LOW_WATER_BYTES && !this.closed) socket.resume()
      },
    }
    this.writer = new FrameWriter(socket)
    socket.setNoDelay(true)
    socket.write(MAGIC) // [M-LIFE-1]
    this.helloTimer = setTimeout(() => this.act(this.machine.fail('SFM_ERR_TIMEOUT', 'handshake not finished in time')), HELLO_TIMEOUT_MS) // [M-LIFE-6]
    socket.on('data', (data) => this.onData(data))
    socket.on('error', () => this.shutdown('connection error'))
    socket.on('close', () => this.shutdown('connection closed'))
  }

  get isReady(): boolean {
    return this.machine.state === 'ready'
  }

  /** Ends the session from the server's side (shutdown, or a newer session of the same client). */
  terminate(code: ErrorName, message: string): void {
    this.act(this.machine.fail(code, message))
  }

  private onData(data: Buffer): void {
    if (this.closed) return
    this.resetIdle()
    const { messages, error } = this.decoder.push(data)
    for (const msg of messages) {
      if (this.closed) return
      this.act(this.machine.receive(msg))
    }
    if (error && !this.closed) this.act(this.machine.fail(error.code, error.message))
  }

  private act(actions: ServerAction[]): void {
    for (const a of actions) {
      switch (a.kind) {
        case 'send':
          this.send(a.message)
          break
        case 'fail':
          this.deps.log.warn(`closing connection from ${this.peer}: ${a.message}`, { code: a.code })
          this.send({ type: 'error', requestId: 0, code: ERROR_CODE[a.code], message: a.message })
          this.writer.flush()
          this.socket.end()
          this.shutdown(a.message)
          // a peer that does not close its side in time is cut off
          setTimeout(() => this.socket.destroy(), 2_000).unref()
          break
        case 'ready':
          this.helloDone = true
          this.clientName = a.clientName
          if (this.helloTimer) clearTimeout(this.helloTimer)
          this.helloTimer = null
          this.decoder.setMaxFrameBytes(MAX_FRAME_BYTES)
          this.decoder.useVersion(this.machine.version)
          this.resetIdle()
          this.deps.log.info(`client connected: ${a.clientName || '(unnamed)'} from ${this.peer}`)
          break
        case 'request':
          this.onRequest(a.message)
          break
        case 'closed':
          // A client that gives up in its handshake (no token, the wrong server) is worth a line.
          if (!this.helloDone) this.deps.log.warn(`connection from ${this.peer} ended in its handshake: ${a.reason}`)
          this.writer.flush()
          this.socket.end()
          this.shutdown(a.reason)
          break
      }
    }
  }

  private onRequest(msg: ClientMessage): void {
    switch (msg.type) {
      case 'haveQuery': {
        if (!this.checkId(msg.requestId)) return
        const index = this.deps.mirror.index
        this.send({ type: 'haveReply', requestId: msg.requestId, have: msg.hashes.map((h) => index.has(h)) })
        return
      }
      case 'chunk':
        this.uploadFor(msg.uploadId)?.addChunk(msg)
        return
      case 'refs':
        this.uploadFor(msg.uploadId)?.addRefs(msg.refs)
        return
      case 'abort': {
        const upload = this.uploads.get(msg.uploadId)
        if (!upload) return // [ABORT] an id that is not an open upload is ignored
        this.uploads.delete(msg.uploadId)
        this.outstanding.delete(msg.uploadId)
        void upload.discard()
        return
      }
      case 'commit': {
        // an upload with no bytes (the empty file) is opened by its COMMIT
        const upload = this.uploads.get(msg.uploadId) ?? this.uploadFor(msg.uploadId)
        // a refused COMMIT leaves its upload in the map, so closing the session discards it
        if (!upload || !this.countReply()) return
        this.uploads.delete(msg.uploadId)
        this.deps.applier.enqueue({ change: msg, upload, done: (o) => this.reply(msg.uploadId, o) })
        return
      }
      case 'list':
        if (!this.checkId(msg.requestId) || !this.countReply()) return
        this.outstanding.add(msg.requestId)
        this.deps.applier.enqueue({ change: msg, done: () => void this.sendListing(msg.requestId) })
        return
      case 'digestQuery':
        if (!this.checkId(msg.requestId) || !this.countReply()) return
        this.outstanding.add(msg.requestId)
        this.deps.applier.enqueue({
          change: msg,
          done: () => {
            this.pendingReplies--
            this.outstanding.delete(msg.requestId)
            this.send({ type: 'digestReply', requestId: msg.requestId, digest: this.deps.mirror.digest() })
          },
        })
        return
      case 'delete':
      case 'mkdir':
      case 'symlink':
      case 'rename':
      case 'setattr':
        if (!this.checkId(msg.requestId) || !this.countReply()) return
        this.outstanding.add(msg.requestId)
        this.deps.applier.enqueue({ change: msg, done: (o) => this.reply(msg.requestId, o) })
        return
      default:
        this.act(this.machine.fail('SFM_ERR_UNEXPECTED', `unexpected ${(msg as Message).type}`))
    }
  }

  /** The open upload with this id, opening it if the id is free [M-CHUNK-3]. */
  private uploadFor(id: number): Upload | undefined {
    const open = this.uploads.get(id)
    if (open) return open
    if (!this.checkId(id)) return undefined
    if (this.uploads.size >= this.deps.policy.maxOpenUploads) {
      this.act(this.machine.fail('SFM_ERR_LIMIT', `more than ${this.deps.policy.maxOpenUploads} open uploads`)) // [M-WELCOME-3]
      return undefined
    }
    const upload = new Upload(id, this.deps.mirror, this.budget, this.deps.applier.fsync)
    this.uploads.set(id, upload)
    this.outstanding.add(id)
    return upload
  }

  private checkId(id: number): boolean {
    if (id !== 0 && !this.outstanding.has(id)) return true
    this.act(this.machine.fail('SFM_ERR_BAD_ID', id === 0 ? 'request id 0' : `id ${id} is already outstanding`)) // [M-ID-2]
    return false
  }

  private countReply(): boolean {
    if (this.pendingReplies >= this.deps.policy.maxInflight) {
      this.act(this.machine.fail('SFM_ERR_LIMIT', `more than ${this.deps.policy.maxInflight} requests in flight`))
      return false
    }
    this.pendingReplies++
    return true
  }

  private reply(id: number, outcome: Outcome): void {
    this.pendingReplies--
    this.outstanding.delete(id)
    if (outcome.ok) this.send({ type: 'ok', requestId: id })
    else this.send({ type: 'error', requestId: id, code: ERROR_CODE[outcome.error.code], message: outcome.error.message })
  }

  private async sendListing(requestId: number): Promise<void> {
    let batch: ListEntry[] = []
    let bytes = 0
    for (const entry of this.deps.mirror.listing()) {
      batch.push(entry)
      bytes += 64 + entry.path.length * 3 + (entry.kind === 'symlink' ? entry.target.length * 3 : 0)
      if (bytes >= LISTING_BATCH_BYTES) {
        if (!this.send({ type: 'listing', requestId, last: false, entries: batch })) await this.drained()
        batch = []
        bytes = 0
      }
      if (this.closed) return
    }
    this.pendingReplies--
    this.outstanding.delete(requestId)
    this.send({ type: 'listing', requestId, last: true, entries: batch })
  }

  private drained(): Promise<void> {
    return new Promise((resolve) => {
      if (this.closed) return resolve()
      const done = () => {
        this.socket.off('drain', done)
        this.socket.off('close', done)
        resolve()
      }
      this.socket.on('drain', done)
      this.socket.on('close', done)
    })
  }

  private send(msg: Message): boolean {
    return this.writer.send(msg)
  }

  private resetIdle(): void {
    if (this.machine.state !== 'ready') return
    if (this.idleTimer) this.idleTimer.refresh()
    else {
      const ms = 3 * this.deps.policy.keepaliveMs // [M-LIFE-5]
      this.idleTimer = setTimeout(() => this.act(this.machine.fail('SFM_ERR_TIMEOUT', `no message for ${ms} ms`)), ms)
      this.idleTimer.unref()
    }
  }

  private shutdown(reason: string): void {
    if (this.closed) return
    this.closed = true
    if (this.helloTimer) clearTimeout(this.helloTimer)
    if (this.idleTimer) clearTimeout(this.idleTimer)
    for (const upload of this.uploads.values()) void upload.discard()
    this.uploads.clear()
    this.deps.release(this)
    this.deps.log.debug(`session ${this.peer} ended: ${reason}`)
  }
}

export function isLoopback(address: string | undefined): boolean {
  if (!address) return false
  return address === '::1' || address.startsWith('127.') || address.startsWith('::ffff:127.')
}
