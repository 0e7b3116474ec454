// Bytes in, messages out: finds the MAGIC preamble and frame boundaries in a byte stream, checks each
// length before it waits for the body, and decodes whole bodies. After an error it refuses more input.
import { DIGEST_VERSION, MAGIC, MAX_FRAME_BYTES, MESSAGE_TYPE } from './constants.js'
import { decodeBody } from './codec.js'
import { ProtocolError, protocolError } from './errors.js'
import type { Message } from './messages.js'

const STATE_MAGIC = 0
const STATE_HEADER = 1 // waiting for the 4-byte length and the type byte
const STATE_BODY = 2
const STATE_FAILED = 3

const VERSION_2_TYPES: ReadonlySet<number> = new Set([MESSAGE_TYPE.DIGEST_QUERY, MESSAGE_TYPE.DIGEST_REPLY])

export interface FrameDecoderOptions {
  /** The largest frame length accepted now; raise it with setMaxFrameBytes once the session is ready. */
  maxFrameBytes: number
  /** Whether the stream starts with MAGIC [M-LIFE-1]. */
  expectMagic: boolean
}

export interface PushResult {
  messages: Message[]
  error?: ProtocolError
}

export class FrameDecoder {
  private state: number
  private maxFrameBytes: number
  private readonly chunks: Buffer[] = []
  private buffered = 0
  private bodyLength = 0
  private type = 0
  // A body that arrives in pieces is copied into one buffer of its (already checked) length as the
  // pieces come: keeping a list of thousands of tiny pieces would make every frame cost O(n^2).
  private partial: Buffer | null = null
  private filled = 0
  private failure: ProtocolError | undefined
  private laterTypes: ReadonlySet<number> | null = null

  constructor(opts: FrameDecoderOptions) {
    this.state = opts.expectMagic ? STATE_MAGIC : STATE_HEADER
    this.maxFrameBytes = opts.maxFrameBytes
  }

  setMaxFrameBytes(n: number): void {
    this.maxFrameBytes = Math.min(n, MAX_FRAME_BYTES)
  }

  /** From now on, types of later versions than the one chosen are unknown types [M-DIGEST-2]. */
  useVersion(version: number): void {
    this.laterTypes = version < DIGEST_VERSION ? VERSION_2_TYPES : null
  }

  private decode(type: number, body: Buffer): Message {
    if (this.laterTypes?.has(type)) {
      throw protocolError('SFM_ERR_UNKNOWN_TYPE', `message type 0x${type.toString(16)} is not part of the protocol version chosen`, { type })
    }
    return decodeBody(type, body)
  }

  /** Bytes received but not yet part of a decoded message (bounded by one frame). */
  get pendingBytes(): number {
    return this.buffered + this.filled * (this.partial ? 1 : 0)
  }

  push(data: Buffer): PushResult {
    if (this.failure) return { messages: [], error: this.failure }
    const messages: Message[] = []
    try {
      if (this.partial) {
        const take = Math.min(data.length, this.bodyLength - this.filled)
        data.copy(this.partial, this.filled, 0, take)
        this.filled += take
        data = data.subarray(take)
        if (this.filled < this.bodyLength) return { messages }
        const body = this.partial
        this.partial = null
        this.state = STATE_HEADER
        messages.push(this.decode(this.type, body))
      }
      if (data.length > 0) {
        this.chunks.push(data)
        this.buffered += data.length
      }
      for (;;) {
        if (this.state === STATE_MAGIC) {
          if (this.buffered < MAGIC.length) break
          const magic = this.consume(MAGIC.length)
          if (!magic.equals(MAGIC)) {
            throw protocolError('SFM_ERR_BAD_MAGIC', `expected sfm magic 89 53 46 4d, got ${magic.toString('hex')}`) // [M-LIFE-2]
          }
          this.state = STATE_HEADER
        } else if (this.state === STATE_HEADER) {
          if (this.buffered < 4) break
          const length = this.peekLength()
          // Check the length before waiting for (or allocating) the body [M-FRAME-1].
          if (length === 0) throw protocolError('SFM_ERR_FRAME_TOO_SMALL', 'frame length 0')
          if (length > this.maxFrameBytes) {
            throw protocolError('SFM_ERR_FRAME_TOO_LARGE', `frame length ${length} exceeds ${this.maxFrameBytes}`)
          }
          if (this.buffered < 5) break
          const header = this.consume(5)
          this.type = header[4]!
          this.bodyLength = length - 1
          this.state = STATE_BODY
        } else {
          if (this.buffered < this.bodyLength) {
            this.partial = Buffer.allocUnsafe(this.bodyLength)
            this.filled = this.buffered
            this.consume(this.buffered).copy(this.partial)
            break
          }
          const body = this.consume(this.bodyLength)
          this.state = STATE_HEADER
          messages.push(this.decode(this.type, body))
        }
      }
    } catch (err) {
      this.failure =
        err instanceof ProtocolError ? err : protocolError('SFM_ERR_MALFORMED', `undecodable frame: ${String(err)}`)
      this.state = STATE_FAILED
      this.chunks.length = 0
      this.buffered = 0
      this.partial = null
      return { messages, error: this.failure }
    }
    return { messages }
  }

  private peekLength(): number {
    const first = this.chunks[0]!
    if (first.length >= 4) return first.readUInt32BE(0)
    const head = Buffer.concat(this.chunks, Math.min(this.buffered, 8))
    return head.readUInt32BE(0)
  }

  /** Takes n bytes off the front; copies only when they span received chunks (ws receiver.js consume). */
  private consume(n: number): Buffer {
    this.buffered -= n
    const first = this.chunks[0]
    if (n === 0) return Buffer.alloc(0)
    if (first!.length === n) return this.chunks.shift()!
    if (first!.length > n) {
      this.chunks[0] = first!.subarray(n)
      return first!.subarray(0, n)
    }
    const out = Buffer.allocUnsafe(n)
    let filled = 0
    while (filled < n) {
      const c = this.chunks[0]!
      const take = Math.min(c.length, n - filled)
      c.copy(out, filled, 0, take)
      filled += take
      if (take === c.length) this.chunks.shift()
      else this.chunks[0] = c.subarray(take)
    }
    return out
  }
}
