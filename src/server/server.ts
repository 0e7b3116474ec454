// sfmd as an object: opens the mirror, listens (TCP or TLS), keeps one client per mirror, and stops
// cleanly: no new requests, the batch in hand finished, open uploads dropped.
import { randomBytes } from 'node:crypto'
import net from 'node:net'
import tls from 'node:tls'
import { FatalError, EXIT } from '../fatal.js'
import type { Logger } from '../log.js'
import { Applier } from './applier.js'
import { MemoryTrim } from '../util/memory-trim.js'
import { Mirror } from './mirror.js'
import type { IndexLimits } from './store/content-index.js'
import { Session } from './session.js'

export interface ServerOptions {
  root: string
  host: string
  port: number
  fsync: boolean
  adopt?: boolean
  token?: Buffer | null
  insecure?: boolean
  tls?: { cert: Buffer; key: Buffer }
  /** Connections still in their handshake at once; beyond it the oldest is dropped (sfm: 256). */
  maxPending?: number
  maxOpenUploads?: number
  maxInflight?: number
  keepaliveMs?: number
  trashTtlMs?: number
  index?: IndexLimits
  log: Logger
}

const STOP_GRACE_MS = 4_000

function oneLine(err: unknown): string {
  return ((err as Error).message ?? String(err)).split('\n')[0]!.replace(/^error:[0-9A-F]+:/, '')
}

export class SfmServer {
  private readonly sessions = new Set<Session>()
  private owner: { clientId: Buffer; name: string; session: Session } | null = null
  private stopping = false
  private readonly memory = new MemoryTrim()

  private constructor(
    private readonly listener: net.Server,
    readonly mirror: Mirror,
    private readonly applier: Applier,
    private readonly log: Logger,
  ) {}

  static async start(opts: ServerOptions): Promise<SfmServer> {
    const log = opts.log
    // The certificate and key are checked before the folder is touched.
    if (opts.tls) {
      try {
        tls.createSecureContext({ cert: opts.tls.cert, key: opts.tls.key })
      } catch (err) {
        throw new FatalError(`cannot use the TLS certificate and key: ${oneLine(err)}`, EXIT.ENVIRONMENT)
      }
    }
    // The port is taken before the folder is touched: a server that cannot listen leaves no new mirror
    // folder behind. Connections that come while the mirror opens wait for it.
    const listener = opts.tls ? tls.createServer({ cert: opts.tls.cert, key: opts.tls.key }) : net.createServer()
    const maxPending = opts.maxPending ?? 256
    let accept: ((socket: net.Socket) => void) | null = null
    const early = new Set<net.Socket>()
    listener.on(opts.tls ? 'secureConnection' : 'connection', (socket: net.Socket) => {
      if (accept) return accept(socket)
      // waiting for the mirror, bounded like connections in their handshake
      if (early.size >= maxPending) {
        const oldest = early.values().next().value!
        early.delete(oldest)
        oldest.destroy()
      }
      early.add(socket)
      socket.on('error', () => {}) // a reset while it waits; its session reports its own errors
      socket.once('close', () => early.delete(socket))
    })
    if (opts.tls) listener.on('tlsClientError', (err) => log.debug(`TLS handshake failed: ${err.message}`))
    await new Promise<void>((resolve, reject) => {
      listener.once('error', (err: NodeJS.ErrnoException) => {
        const where = opts.host ? `port ${opts.port} on ${opts.host}` : `port ${opts.port}`
        if (err.code === 'EADDRINUSE') {
          reject(new FatalError(`${where} is already in use; choose another with --port`, EXIT.ENVIRONMENT))
        } else if (err.code === 'EACCES') {
          reject(new FatalError(`not allowed to listen on ${where}; use a port above 1023`, EXIT.ENVIRONMENT))
        } else if (err.code === 'EADDRNOTAVAIL' || err.code === 'ENOTFOUND') {
          reject(new FatalError(`cannot listen on ${opts.host}: no such local address`, EXIT.ENVIRONMENT))
        } else reject(err)
      })
      listener.listen(opts.port, opts.host || undefined, () => resolve())
    })
    let mirror: Mirror
    try {
      mirror = await Mirror.open({ root: opts.root, adopt: opts.adopt ?? false, trashTtlMs: opts.trashTtlMs, index: opts.index, log })
    } catch (err) {
      for (const socket of early) socket.destroy()
      early.clear()
      await new Promise<void>((resolve) => listener.close(() => resolve()))
      throw err
    }
    const applier = new Applier(mirror, opts.fsync, log)
    const server = new SfmServer(listener, mirror, applier, log)
    const policy = {
      token: opts.token ?? null,
      insecure: opts.insecure ?? false,
      mirrorId: mirror.mirrorId,
      maxOpenUploads: opts.maxOpenUploads ?? 32,
      // enough to keep a disk busy with small files; more only lets a client queue memory on both sides
      maxInflight: opts.maxInflight ?? 1_024,
      keepaliveMs: opts.keepaliveMs ?? 15_000,
    }
    accept = (socket) => {
      if (server.stopping) return void socket.destroy()
      // Hundreds of idle or garbage connections must not lock the real client out: when too many are
      // still in their handshake, the oldest of them goes (it has had the longest to say HELLO).
      const pending = [...server.sessions].filter((s) => !s.isReady)
      if (pending.length >= maxPending) pending[0]!.terminate('SFM_ERR_LIMIT', 'too many connections in their handshake; the oldest is dropped')
      const session = new Session(socket, {
        mirror,
        applier,
        policy: { ...policy, serverNonce: randomBytes(16) },
        claim: (s, id, name) => server.claim(s, id, name),
        release: (s) => server.release(s),
        log,
      })
      server.sessions.add(session)
      socket.on('data', (data: Buffer) => server.memory.moved(data.length))
      socket.on('close', () => server.sessions.delete(session))
    }
    for (const socket of early) accept(socket)
    early.clear()
    listener.on('error', (err) => log.error(`listener: ${err.message}`))
    return server
  }

  address(): { host: string; port: number } {
    const a = this.listener.address() as net.AddressInfo
    return { host: a.address, port: a.port }
  }

  /** One client id at a time; the same id again means the client restarted, so its old session goes. */
  private claim(session: Session, clientId: Buffer, name: string): string | null {
    const owner = this.owner
    if (owner && owner.session !== session) {
      if (!owner.clientId.equals(clientId)) return owner.name || owner.clientId.toString('hex')
      this.log.info(`client ${name} reconnected; ending its previous session`)
      owner.session.terminate('SFM_ERR_SHUTDOWN', 'replaced by a newer session of the same client')
    }
    this.owner = { clientId, name, session }
    return null
  }

  private release(session: Session): void {
    if (this.owner?.session === session) this.owner = null
  }

  /** Stops accepting, lets the changes in hand finish (bounded), then closes every session. */
  async stop(): Promise<void> {
    if (this.stopping) return
    this.stopping = true
    const closed = new Promise<void>((resolve) => this.listener.close(() => resolve()))
    const grace = new Promise<void>((resolve) => setTimeout(resolve, STOP_GRACE_MS).unref())
    await Promise.race([this.applier.idle(), grace])
    for (const s of this.sessions) s.terminate('SFM_ERR_SHUTDOWN', 'the server is stopping')
    await Promise.race([closed, new Promise((r) => setTimeout(r, 500).unref())])
    this.memory.stop()
    await this.mirror.close()
  }
}
