// The client side of a connection as a state machine (PROTOCOL.md 8.2): messages in, actions out. It
// knows no sockets; the connection carries out its actions.
import { clientMac, macMatches, serverMac } from '../protocol/auth.js'
import { HASH_ALGO, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, errorName, isConnectionError, type ErrorName } from '../protocol/constants.js'
import type { ClientMessage, Message, ServerMessage, Welcome } from '../protocol/messages.js'

export type ClientState = 'awaitWelcome' | 'awaitAuthOk' | 'ready' | 'closed'

export interface ClientIdentity {
  readonly clientId: Buffer
  readonly clientNonce: Buffer
  readonly clientName: string
  readonly token: Buffer | null
}

export type ClientAction =
  | { kind: 'send'; message: ClientMessage }
  | { kind: 'ready'; welcome: Welcome }
  /** A reply to a request: the connection matches it to the request by id. */
  | { kind: 'reply'; message: Extract<ServerMessage, { requestId: number }> }
  /** We end the session: send ERROR with id 0 (if `notify`), close, report. */
  | { kind: 'fail'; code: ErrorName; message: string; notify: boolean }
  /** The server ended the session with a connection-level error. */
  | { kind: 'refused'; code: ErrorName | 'SFM_ERR_UNKNOWN'; message: string }

export class ClientMachine {
  state: ClientState = 'awaitWelcome'
  private welcome: Welcome | null = null

  constructor(private readonly me: ClientIdentity) {}

  hello(): ClientMessage {
    return {
      type: 'hello',
      minVersion: MIN_PROTOCOL_VERSION,
      maxVersion: PROTOCOL_VERSION,
      clientId: this.me.clientId,
      clientNonce: this.me.clientNonce,
      algos: [HASH_ALGO.XXH3_128],
      clientName: this.me.clientName,
    }
  }

  receive(msg: Message): ClientAction[] {
    if (this.state === 'closed') return []
    if (msg.type === 'error' && (msg.requestId === 0 || isConnectionError(msg.code))) {
      this.state = 'closed'
      return [{ kind: 'refused', code: errorName(msg.code), message: msg.message }]
    }
    switch (this.state) {
      case 'awaitWelcome':
        return msg.type === 'welcome' ? this.onWelcome(msg) : this.unexpected(msg)
      case 'awaitAuthOk':
        return msg.type === 'authOk' ? this.onAuthOk(msg.mac) : this.unexpected(msg)
      case 'ready':
        return this.onReady(msg)
    }
  }

  fail(code: ErrorName, message: string, notify = true): ClientAction[] {
    if (this.state === 'closed') return []
    this.state = 'closed'
    return [{ kind: 'fail', code, message, notify }]
  }

  private onWelcome(w: Welcome): ClientAction[] {
    if (w.version < MIN_PROTOCOL_VERSION || w.version > PROTOCOL_VERSION) {
      return this.fail('SFM_ERR_VERSION', `server chose protocol version ${w.version}, which this client did not offer`)
    }
    if (w.algo !== HASH_ALGO.XXH3_128) {
      return this.fail('SFM_ERR_HASH_ALGO', `server chose hash algorithm ${w.algo}, which this client did not offer`)
    }
    this.welcome = w
    if (w.authRequired) {
      if (!this.me.token) {
        return this.fail('SFM_ERR_AUTH_FAILED', 'the server requires a token: pass --token-file FILE or set SFM_TOKEN')
      }
      this.state = 'awaitAuthOk'
      return [{ kind: 'send', message: { type: 'auth', mac: clientMac(this.me.token, this.binding()) } }]
    }
    if (this.me.token) {
      // [M-AUTH-2] a server that does not ask for the token may not be the one that has it
      return this.fail('SFM_ERR_AUTH_FAILED', 'the server does not require a token, but this client has one: refusing to send data to a server that cannot prove it knows the token')
    }
    this.state = 'ready'
    return [{ kind: 'ready', welcome: w }]
  }

  private onAuthOk(mac: Buffer): ClientAction[] {
    if (!macMatches(serverMac(this.me.token!, this.binding()), mac)) {
      return this.fail('SFM_ERR_AUTH_FAILED', 'the server could not prove it knows the token')
    }
    this.state = 'ready'
    return [{ kind: 'ready', welcome: this.welcome! }]
  }

  private onReady(msg: Message): ClientAction[] {
    switch (msg.type) {
      case 'ping':
        return [{ kind: 'send', message: { type: 'pong' } }]
      case 'pong':
        return []
      case 'ok':
      case 'error':
      case 'haveReply':
      case 'listing':
      case 'digestReply':
        return [{ kind: 'reply', message: msg }]
      default:
        return this.unexpected(msg)
    }
  }

  private binding() {
    return { clientNonce: this.me.clientNonce, serverNonce: this.welcome!.serverNonce, clientId: this.me.clientId }
  }

  private unexpected(msg: Message): ClientAction[] {
    return this.fail('SFM_ERR_UNEXPECTED', `unexpected ${msg.type} from the server in state ${this.state}`)
  }
}
