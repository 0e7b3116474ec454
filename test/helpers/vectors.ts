// Loads the golden vectors of spec/ (PROTOCOL.md section 16; notation in spec/README.md) and converts
// between their JSON form of messages and the Message values of src/protocol/messages.ts.
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Message } from '../../src/protocol/messages.js'

/**
 * The bytes of an annotated hex array. In each string, everything from `#` on is a comment; the rest is
 * hex, where white space is ignored and a token `HEX*N` stands for the bytes HEX repeated N times.
 */
export function hexOf(lines: readonly string[]): Buffer {
  let hex = ''
  for (const line of lines) {
    for (const token of line.replace(/#.*$/s, '').split(/\s+/)) {
      const repeat = /^([0-9a-fA-F]+)\*([0-9]+)$/.exec(token)
      if (repeat) {
        // A repeat must stand on whole bytes, or "0 0*3" would mean something odd.
        if (hex.length % 2 !== 0 || repeat[1]!.length % 2 !== 0) throw new Error(`repeat not on a byte boundary: ${line}`)
        hex += repeat[1]!.repeat(Number(repeat[2]))
      } else if (/^[0-9a-fA-F]*$/.test(token)) {
        hex += token
      } else {
        throw new Error(`not hex: ${JSON.stringify(token)} in ${JSON.stringify(line)}`)
      }
    }
  }
  if (hex.length % 2 !== 0) throw new Error(`odd number of hex digits: ${lines.join(' | ')}`)
  return Buffer.from(hex, 'hex')
}

/** The JSON files under dir (for example `spec/valid`), sorted so that runs are repeatable. */
export function listVectors(dir: string): string[] {
  return readdirSync(dir)
    .filter(name => name.endsWith('.json'))
    .sort()
    .map(name => join(dir, name))
}

export type Json = any

export function readVector(file: string): Json {
  return JSON.parse(readFileSync(file, 'utf8'))
}

// Fields that section 16 writes as lowercase hex and messages.ts holds as Buffers.
const BYTE_FIELDS = new Set([
  'clientId', 'clientNonce', 'serverNonce', 'mirrorId', 'mac', 'hash', 'hashes', 'contentId', 'data', 'digest',
])

// Section 16 names the MAC fields after section 7 (client_mac, server_mac); messages.ts calls both `mac`.
const MAC_FIELD: Record<string, string> = { auth: 'clientMac', authOk: 'serverMac' }

/** The Message that the JSON form of section 16 describes. */
export function messageFromJson(json: Json): Message {
  return convert(renameKey(json, MAC_FIELD[json.type], 'mac'), fromJsonField) as Message
}

/** The JSON form of a Message. Fields a decoder adds are kept, so that comparisons show them. */
export function messageToJson(msg: Message): Json {
  return renameKey(convert(msg, toJsonField), 'mac', MAC_FIELD[msg.type])
}

function renameKey(value: Json, from: string | undefined, to: string | undefined): Json {
  if (from === undefined || to === undefined || !(from in value)) return value
  const { [from]: moved, ...rest } = value
  return { ...rest, [to]: moved }
}

function convert(value: Json, field: (key: string, value: Json) => Json): Json {
  const out: Json = {}
  for (const [key, v] of Object.entries(value)) out[key] = field(key, v)
  return out
}

function fromJsonField(key: string, value: Json): Json {
  if (key === 'mtimeNs') return BigInt(value)
  if (BYTE_FIELDS.has(key)) return Array.isArray(value) ? value.map(bytesOfHex) : bytesOfHex(value)
  if (key === 'entries' || key === 'refs') return value.map((e: Json) => convert(e, fromJsonField))
  return value
}

// Buffer.from(hex, 'hex') stops silently at the first bad digit; a typo in a vector must not.
function bytesOfHex(hex: string): Buffer {
  if (!/^([0-9a-f]{2})*$/.test(hex)) throw new Error(`not lowercase hex bytes: ${JSON.stringify(hex)}`)
  return Buffer.from(hex, 'hex')
}

function toJsonField(_key: string, value: Json): Json {
  if (typeof value === 'bigint') return value.toString()
  if (Buffer.isBuffer(value)) return value.toString('hex')
  if (Array.isArray(value)) return value.map(v => toJsonField('', v))
  if (typeof value === 'object' && value !== null) return convert(value, toJsonField)
  return value
}
