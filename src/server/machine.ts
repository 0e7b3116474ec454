// The server side of a connection as a state machine (PROTOCOL.md 8.1): messages in, actions out.
// It knows no sockets and no disks; the session carries out its actions.
import { clientMac, macMatches, serverMac } from '../protocol/auth.js'
import { DIGEST_VERSION, HASH_ALGO, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, type ErrorName } from '../protocol/constants.js'
import type { ClientMessage, Hello, Message, ServerMessage } from '../protocol/messages.js'

export type ServerState = 'awaitHello' | 'awaitAuth' | 'ready' | 'closed'

export interface ServerPolicy {
  readonly token: Buffer | null
  /** Whether clients without a token may connect from other hosts (`--insecure`). */
  readonly insecure: boolean
  readonly peerIsLoopback: boolean
  readonly serverNonce: Buffer
  readonly mirrorId: Buffer
  readonly maxOpenUploads: number
  readonly maxInflight: number
  readonly keepaliveMs: number
  /** Takes the mirror for this client, or returns the name of the client that holds it [M-SEM-1]. */
  claim(clientId: Buffer, clientName: string): string | null
}

export type ServerAction =
  | { kind: 'send'; message: ServerMessage }
  /** Send ERROR with request id 0, then close [M-LIFE-4]. */
  | { kind: 'fail'; code: ErrorName; message: string }
  | { kind: 'ready'; clientId: Buffer; clientName: string }
  | { kind: 'request'; message: ClientMessage }
  | { kind: 'closed'; reason: string }

const SUPPORTED_ALGOS: readonly number[] = [HASH_ALGO.XXH3_128]

export class ServerMachine {
  state: ServerState = 'awaitHello'
  private hello: Hello | null = null
  /** The protocol version chosen at HELLO: the highest both sides speak. */
  version = PROTOCOL_VERSION

  constructor(private readonly policy: ServerPolicy) {}

  receive(msg: Message): ServerAction[] {
    if (this.state === 'closed') return []
    if (msg.type === 'error' && msg.requestId === 0) {
      this.state = 'closed'
      return [{ kind: 'closed', reason: `client ended the session: ${msg.message}` }]
    }
    switch (this.state) {
      case 'awaitHello':
        return msg.type === 'hello' ? this.onHello(msg) : this.unexpected(msg)
      case 'awaitAuth':
        return msg.type === 'auth' ? this.onAuth(msg.mac) : this.unexpected(msg)
      case 'ready':
        return this.onReady(msg)
    }
  }

  /** The peer went away or a timer fired: nothing more is accepted. */
  fail(code: ErrorName, message: string): ServerAction[] {
    if (this.state === 'closed') return []
    this.state = 'closed'
    return [{ kind: 'fail', code, message }]
  }

  private onHello(hello: Hello): ServerAction[] {
    const p = this.policy
    if (hello.minVersion > PROTOCOL_VERSION || hello.maxVersion < MIN_PROTOCOL_VERSION) {
      return this.fail('SFM_ERR_VERSION', `server speaks protocol versions ${MIN_PROTOCOL_VERSION}..${PROTOCOL_VERSION}; client offers ${hello.minVersion}..${hello.maxVersion}`) // [M-HELLO-3]
    }
    this.version = Math.min(hello.maxVersion, PROTOCOL_VERSION)
    const algo = hello.algos.find((a) => SUPPORTED_ALGOS.includes(a))
    if (algo === undefined) {
      return this.fail('SFM_ERR_HASH_ALGO', `server supports hash algorithm 1 (XXH3-128) only; client offers ${hello.algos.join(', ')}`)
    }
    if (!p.token && !p.peerIsLoopback && !p.insecure) {
      return this.fail(
        'SFM_ERR_AUTH_REQUIRED',
        'this server has no token and accepts clients on loopback only: give both sides the same secret with --token-file FILE or SFM_TOKEN (or start sfmd with --insecure)',
      ) // [M-AUTH-3]
    }
    this.hello = hello
    const welcome: ServerMessage = {
      type: 'welcome',
      version: this.version,
      algo,
      authRequired: p.token !== null,
      serverNonce: p.serverNonce,
      mirrorId: p.mirrorId,
      maxOpenUploads: p.maxOpenUploads,
      maxInflight: p.maxInflight,
      keepaliveMs: p.keepaliveMs,
    }
    if (p.token) {
      this.state = 'awaitAuth'
      return [{ kind: 'send', message: welcome }]
    }
    // Without authentication the mirror is claimed at once; with it, only after the proof, so that an
    // unauthenticated peer can never push the owner out.
    return this.claimed([{ kind: 'send', message: welcome }])
  }

  private onAuth(mac: Buffer): ServerAction[] {
    const hello = this.hello!
    const binding = { clientNonce: hello.clientNonce, serverNonce: this.policy.serverNonce, clientId: hello.clientId }
    if (!macMatches(clientMac(this.policy.token!, binding), mac)) {
      return this.fail('SFM_ERR_AUTH_FAILED', 'authentication failed: the client does not have this server\'s token')
    }
    return this.claimed([{ kind: 'send', message: { type: 'authOk', mac: serverMac(this.policy.token!, binding) } }])
  }

  /** Takes the mirror and sends `answer` (WELCOME or AUTH_OK); a busy mirror gets ERROR BUSY instead. */
  private claimed(answer: ServerAction[]): ServerAction[] {
    const hello = this.hello!
    const holder = this.policy.claim(hello.clientId, hello.clientName)
    if (holder !== null) {
      return this.fail('SFM_ERR_BUSY', `this mirror is in use by another client (${holder}); one client per mirror at a time`)
    }
    this.state = 'ready'
    return [...answer, { kind: 'ready', clientId: hello.clientId, clientName: hello.clientName }]
  }

  private onReady(msg: Message): ServerAction[] {
    switch (msg.type) {
      case 'ping':
        return [{ kind: 'send', message: { type: 'pong' } }]
      case 'pong':
      case 'error':
        return []
      case 'digestQuery':
        // a message of a later version than the one chosen is as unknown as any other [M-FRAME-2]
        if (this.version < DIGEST_VERSION) return this.fail('SFM_ERR_UNKNOWN_TYPE', `DIGEST? (type 0x16) is not part of protocol version ${this.version}`)
        return [{ kind: 'request', message: msg }]
      case 'haveQuery':
      case 'list':
      case 'chunk':
      case 'refs':
      case 'commit':
      case 'abort':
      case 'delete':
      case 'mkdir':
      case 'symlink':
      case 'rename':
      case 'setattr':
        return [{ kind: 'request', message: msg }]
      default:
        return this.unexpected(msg)
    }
  }

  private unexpected(msg: Message): ServerAction[] {
    return this.fail('SFM_ERR_UNEXPECTED', `unexpected ${msg.type} in state ${this.state}`) // [M-STATE-1]
  }
}
