// A cursor over exactly one frame body. Every read is bounded by the body: no field may run past it
// [M-FRAME-3], and whatever is left at the end is an error, never the next message [M-FRAME-4].
import { MAX_SAFE_U64 } from './constants.js'
import { protocolError } from './errors.js'

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

export class BodyReader {
  private offset = 0

  constructor(
    private readonly body: Buffer,
    private readonly type: number,
  ) {}

  get remaining(): number {
    return this.body.length - this.offset
  }

  u8(): number {
    this.need(1, 'u8')
    return this.body[this.offset++]!
  }

  u16(): number {
    this.need(2, 'u16')
    const v = this.body.readUInt16BE(this.offset)
    this.offset += 2
    return v
  }

  u32(): number {
    this.need(4, 'u32')
    const v = this.body.readUInt32BE(this.offset)
    this.offset += 4
    return v
  }

  /** A u64 that must fit a JavaScript number exactly [M-CONV-1]. */
  u64(): number {
    this.need(8, 'u64')
    const v = this.body.readBigUInt64BE(this.offset)
    if (v > BigInt(MAX_SAFE_U64)) throw this.fail(`u64 ${v} is larger than 2^53 - 1`)
    this.offset += 8
    return Number(v)
  }

  i64(): bigint {
    this.need(8, 'i64')
    const v = this.body.readBigInt64BE(this.offset)
    this.offset += 8
    return v
  }

  /** A view of the next n bytes; it shares memory with the frame. */
  bytes(n: number): Buffer {
    this.need(n, `${n} bytes`)
    const v = this.body.subarray(this.offset, this.offset + n)
    this.offset += n
    return v
  }

  /** A private copy of the next n bytes, for values kept after the frame is gone. */
  copy(n: number): Buffer {
    return Buffer.from(this.bytes(n))
  }

  rest(): Buffer {
    return this.bytes(this.remaining)
  }

  /** A `str`: u16 byte count, then well-formed UTF-8 [M-CONV-2]. Returns the raw bytes' text. */
  str(field: string, min: number, max: number): string {
    const n = this.u16()
    if (n < min || n > max) throw this.fail(`${field} is ${n} bytes, outside ${min}..${max}`)
    return this.text(this.bytes(n), field)
  }

  /** The raw bytes of a `str`, for wire paths, whose UTF-8 is judged by the path rules. */
  strBytes(): Buffer {
    return this.bytes(this.u16())
  }

  text(raw: Buffer, field: string): string {
    try {
      return utf8.decode(raw)
    } catch {
      throw this.fail(`${field} is not well-formed UTF-8`)
    }
  }

  /** Throws unless the body has been read exactly to its end [M-FRAME-4]. */
  end(): void {
    if (this.remaining !== 0) {
      throw protocolError('SFM_ERR_TRAILING_BYTES', `${this.remaining} bytes after the last field`, {
        type: this.type,
        offset: this.offset,
      })
    }
  }

  fail(message: string) {
    return protocolError('SFM_ERR_MALFORMED', message, { type: this.type, offset: this.offset })
  }

  private need(n: number, what: string): void {
    if (this.remaining < n) throw this.fail(`body ends before ${what} at offset ${this.offset}`)
  }
}
