// Messages to bytes and back: encodeMessage builds whole frames, decodeBody reads one frame body.
// Both are pure; the framer (framer.ts) finds frame boundaries and the sessions own the sockets.
import {
  ENTRY_KIND,
  HASH_BYTES,
  ID_BYTES,
  LISTING_LAST,
  MAC_BYTES,
  MAX_ALGOS,
  MAX_CHUNK_BYTES,
  MAX_CLIENT_NAME_BYTES,
  MAX_HASHES,
  MAX_MODE,
  MAX_PATH_BYTES,
  MAX_TEXT_BYTES,
  MESSAGE_TYPE,
  MIN_KEEPALIVE_MS,
  NONCE_BYTES,
  WELCOME_AUTH_REQUIRED,
} from './constants.js'
import { protocolError } from './errors.js'
import type { ListEntry, Message } from './messages.js'
import { checkWirePath, decodedPathProblem } from './paths.js'
import { BodyReader } from './reader.js'
import { fitUtf8 } from './text.js'

// ---------------------------------------------------------------------------------------------
// Encoding: size first, then one allocation per frame (CHUNK data stays a separate part, so a
// session can write header and payload under one cork without copying the payload).

class Writer {
  private offset = 0
  constructor(readonly buf: Buffer) {}

  u8(v: number): this {
    this.buf[this.offset++] = v
    return this
  }
  u16(v: number): this {
    this.offset = this.buf.writeUInt16BE(v, this.offset)
    return this
  }
  u32(v: number): this {
    this.offset = this.buf.writeUInt32BE(v, this.offset)
    return this
  }
  u64(v: number): this {
    this.offset = this.buf.writeBigUInt64BE(BigInt(v), this.offset)
    return this
  }
  i64(v: bigint): this {
    this.offset = this.buf.writeBigInt64BE(v, this.offset)
    return this
  }
  bytes(v: Uint8Array): this {
    this.buf.set(v, this.offset)
    this.offset += v.length
    return this
  }
  str(v: Buffer): this {
    return this.u16(v.length).bytes(v)
  }
  get length(): number {
    return this.offset
  }
}

const utf8 = (s: string): Buffer => Buffer.from(s, 'utf8')

/** Allocates a frame for a body of `bodyBytes` and writes its length and type. */
function frame(type: number, bodyBytes: number): Writer {
  const w = new Writer(Buffer.allocUnsafe(5 + bodyBytes))
  // length counts the type byte and the body, not itself (PROTOCOL.md 6)
  return w.u32(1 + bodyBytes).u8(type)
}

function entryBytes(e: ListEntry, path: Buffer, target: Buffer | null): number {
  const common = 1 + 2 + path.length + 2 + 8
  switch (e.kind) {
    case 'file':
      return common + 8 + HASH_BYTES
    case 'dir':
      return common
    case 'symlink':
      return common + 2 + target!.length
  }
}

/**
 * The whole frame for a message, length prefix included, as one or two parts
 * (Buffer.concat(parts) is the frame). Callers pass well-formed values: the encoder does not
 * re-validate what the decoder checks, except that it shortens an ERROR's text to fit (the text often
 * quotes a path, which alone may be longer).
 */
export function encodeMessage(msg: Message): Buffer[] {
  const T = MESSAGE_TYPE
  switch (msg.type) {
    case 'hello': {
      const name = utf8(msg.clientName)
      const w = frame(T.HELLO, 4 + ID_BYTES + NONCE_BYTES + 1 + msg.algos.length + 2 + name.length)
      w.u16(msg.minVersion).u16(msg.maxVersion).bytes(msg.clientId).bytes(msg.clientNonce)
      w.u8(msg.algos.length)
      for (const a of msg.algos) w.u8(a)
      return [w.str(name).buf]
    }
    case 'welcome': {
      const w = frame(T.WELCOME, 2 + 1 + 1 + NONCE_BYTES + ID_BYTES + 2 + 2 + 4)
      w.u16(msg.version).u8(msg.algo).u8(msg.authRequired ? WELCOME_AUTH_REQUIRED : 0)
      w.bytes(msg.serverNonce).bytes(msg.mirrorId)
      return [w.u16(msg.maxOpenUploads).u16(msg.maxInflight).u32(msg.keepaliveMs).buf]
    }
    case 'auth':
      return [frame(T.AUTH, MAC_BYTES).bytes(msg.mac).buf]
    case 'authOk':
      return [frame(T.AUTH_OK, MAC_BYTES).bytes(msg.mac).buf]
    case 'ping':
      return [frame(T.PING, 0).buf]
    case 'pong':
      return [frame(T.PONG, 0).buf]
    case 'error': {
      const text = utf8(fitUtf8(msg.message, MAX_TEXT_BYTES))
      return [frame(T.ERROR, 4 + 2 + 2 + text.length).u32(msg.requestId).u16(msg.code).str(text).buf]
    }
    case 'ok':
      return [frame(T.OK, 4).u32(msg.requestId).buf]
    case 'haveQuery': {
      const w = frame(T.HAVE_QUERY, 4 + 2 + msg.hashes.length * HASH_BYTES)
      w.u32(msg.requestId).u16(msg.hashes.length)
      for (const h of msg.hashes) w.bytes(h)
      return [w.buf]
    }
    case 'haveReply': {
      const bitmap = Buffer.alloc(Math.ceil(msg.have.length / 8))
      msg.have.forEach((has, i) => {
        // the first hash is the most significant bit of the first byte (PROTOCOL.md HAVE_REPLY)
        if (has) bitmap[i >> 3]! |= 0x80 >> (i & 7)
      })
      return [frame(T.HAVE_REPLY, 4 + 2 + bitmap.length).u32(msg.requestId).u16(msg.have.length).bytes(bitmap).buf]
    }
    case 'list':
      return [frame(T.LIST, 4).u32(msg.requestId).buf]
    case 'listing': {
      const encoded = msg.entries.map((e) => ({
        e,
        path: utf8(e.path),
        target: e.kind === 'symlink' ? utf8(e.target) : null,
      }))
      const size = encoded.reduce((n, x) => n + entryBytes(x.e, x.path, x.target), 4 + 1 + 2)
      const w = frame(T.LISTING, size).u32(msg.requestId).u8(msg.last ? LISTING_LAST : 0).u16(msg.entries.length)
      for (const { e, path, target } of encoded) {
        w.u8(ENTRY_KIND[e.kind === 'file' ? 'FILE' : e.kind === 'dir' ? 'DIR' : 'SYMLINK'])
        w.str(path).u16(e.mode).i64(e.mtimeNs)
        if (e.kind === 'file') w.u64(e.size).bytes(e.contentId)
        else if (e.kind === 'symlink') w.str(target!)
      }
      return [w.buf]
    }
    case 'digestQuery':
      return [frame(T.DIGEST_QUERY, 4).u32(msg.requestId).buf]
    case 'digestReply':
      return [frame(T.DIGEST_REPLY, 4 + HASH_BYTES).u32(msg.requestId).bytes(msg.digest).buf]
    case 'chunk': {
      // the header's length covers the payload that follows it as a second part
      const w = new Writer(Buffer.allocUnsafe(5 + 4 + HASH_BYTES))
      w.u32(1 + 4 + HASH_BYTES + msg.data.length).u8(T.CHUNK).u32(msg.uploadId).bytes(msg.hash)
      return [w.buf, msg.data]
    }
    case 'refs': {
      const w = frame(T.REFS, 4 + 2 + msg.refs.length * (HASH_BYTES + 8)).u32(msg.uploadId).u16(msg.refs.length)
      for (const r of msg.refs) w.bytes(r.hash).u64(r.length)
      return [w.buf]
    }
    case 'commit': {
      const path = utf8(msg.path)
      const w = frame(T.COMMIT, 4 + 2 + path.length + 2 + 8 + 8 + HASH_BYTES)
      w.u32(msg.uploadId).str(path).u16(msg.mode).i64(msg.mtimeNs).u64(msg.size).bytes(msg.contentId)
      return [w.buf]
    }
    case 'abort':
      return [frame(T.ABORT, 4).u32(msg.uploadId).buf]
    case 'delete': {
      const path = utf8(msg.path)
      return [frame(T.DELETE, 4 + 2 + path.length).u32(msg.requestId).str(path).buf]
    }
    case 'mkdir':
    case 'setattr': {
      const path = utf8(msg.path)
      const w = frame(msg.type === 'mkdir' ? T.MKDIR : T.SETATTR, 4 + 2 + path.length + 2 + 8)
      return [w.u32(msg.requestId).str(path).u16(msg.mode).i64(msg.mtimeNs).buf]
    }
    case 'symlink': {
      const path = utf8(msg.path)
      const target = utf8(msg.target)
      const w = frame(T.SYMLINK, 4 + 2 + path.length + 2 + target.length + 8)
      return [w.u32(msg.requestId).str(path).str(target).i64(msg.mtimeNs).buf]
    }
    case 'rename': {
      const from = utf8(msg.from)
      const to = utf8(msg.to)
      return [frame(T.RENAME, 4 + 2 + from.length + 2 + to.length).u32(msg.requestId).str(from).str(to).buf]
    }
    default: {
      const never: never = msg
      throw new Error(`cannot encode ${(never as Message).type}`)
    }
  }
}

export function encodeFrame(msg: Message): Buffer {
  const parts = encodeMessage(msg)
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts)
}

// ---------------------------------------------------------------------------------------------
// Decoding: one body, checked in the order of PROTOCOL.md 6 (fields, then trailing bytes, then
// meaning). Values kept beyond the frame (ids, hashes) are copied; CHUNK data is a view, because
// the server writes it to disk at once and copying 1 MiB per frame would be the hot path's cost.

// Wire paths are meaning, checked after the structure (PROTOCOL.md 6, step 5): path() decodes them
// and queues them; checkPaths() judges them once the body has been read to its end. A path queued as
// text is well-formed UTF-8 of a valid length; one queued as its bytes is not.
const lenient = new TextDecoder('utf-8', { ignoreBOM: true })
const strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

function path(r: BodyReader, queued: Array<string | Buffer>): string {
  const raw = r.strBytes()
  if (raw.length >= 1 && raw.length <= MAX_PATH_BYTES) {
    try {
      const text = strict.decode(raw)
      queued.push(text)
      return text
    } catch {
      // not UTF-8: judged below
    }
  }
  queued.push(raw)
  return lenient.decode(raw)
}

function checkPaths(queued: ReadonlyArray<string | Buffer>): void {
  for (const q of queued) {
    if (typeof q === 'string') {
      const problem = decodedPathProblem(q)
      if (problem !== null) checkWirePath(q, problem)
    } else if (q.length === 0 || q.length > MAX_PATH_BYTES) {
      throw protocolError('SFM_ERR_BAD_PATH', `path is ${q.length} bytes, outside 1..${MAX_PATH_BYTES}`)
    } else throw protocolError('SFM_ERR_BAD_PATH', 'path is not well-formed UTF-8') // [M-PATH-1] 2
  }
}

function mode(r: BodyReader): number {
  const m = r.u16()
  if (m > MAX_MODE) throw r.fail(`mode 0o${m.toString(8)} has bits above 0o7777`) // [M-CONV-3]
  return m
}

function requestId(r: BodyReader): number {
  // id 0 is never a request: the session rejects it with SFM_ERR_BAD_ID [M-ID-1]
  return r.u32()
}

function count(r: BodyReader, what: string, min: number, max: number): number {
  const n = r.u16()
  if (n < min || n > max) throw r.fail(`${what} count ${n} is outside ${min}..${max}`)
  return n
}

function listEntry(r: BodyReader, q: Array<string | Buffer>): ListEntry {
  const kind = r.u8()
  const p = path(r, q)
  const m = mode(r)
  const mtimeNs = r.i64()
  switch (kind) {
    case ENTRY_KIND.FILE:
      return { kind: 'file', path: p, mode: m, mtimeNs, size: r.u64(), contentId: r.copy(HASH_BYTES) }
    case ENTRY_KIND.DIR:
      return { kind: 'dir', path: p, mode: m, mtimeNs }
    case ENTRY_KIND.SYMLINK:
      return { kind: 'symlink', path: p, mode: m, mtimeNs, target: r.str('target', 1, MAX_PATH_BYTES) }
    default:
      throw r.fail(`entry kind ${kind} is not 1, 2 or 3`) // [M-LIST-2]
  }
}

function symlinkTarget(r: BodyReader): string {
  const target = r.str('target', 1, MAX_PATH_BYTES)
  if (target.includes('\0')) throw r.fail('target contains NUL') // [M-SYMLINK-1]
  return target
}

function body(type: number, r: BodyReader, q: Array<string | Buffer>): Message {
  const T = MESSAGE_TYPE
  switch (type) {
    case T.HELLO: {
      const minVersion = r.u16()
      const maxVersion = r.u16()
      if (minVersion > maxVersion) throw r.fail(`min_version ${minVersion} > max_version ${maxVersion}`) // [M-HELLO-1]
      const clientId = r.copy(ID_BYTES)
      const clientNonce = r.copy(NONCE_BYTES)
      const n = r.u8()
      if (n < 1 || n > MAX_ALGOS) throw r.fail(`algo_count ${n} is outside 1..${MAX_ALGOS}`) // [M-HELLO-2]
      const algos = Array.from(r.bytes(n))
      const clientName = r.str('client_name', 0, MAX_CLIENT_NAME_BYTES)
      return { type: 'hello', minVersion, maxVersion, clientId, clientNonce, algos, clientName }
    }
    case T.WELCOME: {
      const version = r.u16()
      const algo = r.u8()
      const flags = r.u8()
      if (flags & ~WELCOME_AUTH_REQUIRED) throw r.fail(`reserved WELCOME flags 0x${flags.toString(16)}`) // [M-WELCOME-1]
      const serverNonce = r.copy(NONCE_BYTES)
      const mirrorId = r.copy(ID_BYTES)
      const maxOpenUploads = r.u16()
      const maxInflight = r.u16()
      const keepaliveMs = r.u32()
      if (maxOpenUploads < 1 || maxInflight < 1) throw r.fail('max_open_uploads and max_inflight must be at least 1')
      if (keepaliveMs < MIN_KEEPALIVE_MS) throw r.fail(`keepalive_ms ${keepaliveMs} is below ${MIN_KEEPALIVE_MS}`)
      const authRequired = (flags & WELCOME_AUTH_REQUIRED) !== 0
      return { type: 'welcome', version, algo, authRequired, serverNonce, mirrorId, maxOpenUploads, maxInflight, keepaliveMs }
    }
    case T.AUTH:
      return { type: 'auth', mac: r.copy(MAC_BYTES) }
    case T.AUTH_OK:
      return { type: 'authOk', mac: r.copy(MAC_BYTES) }
    case T.PING:
      return { type: 'ping' }
    case T.PONG:
      return { type: 'pong' }
    case T.ERROR: {
      const id = r.u32()
      const code = r.u16()
      return { type: 'error', requestId: id, code, message: r.str('message', 0, MAX_TEXT_BYTES) }
    }
    case T.OK:
      return { type: 'ok', requestId: requestId(r) }
    case T.HAVE_QUERY: {
      const id = requestId(r)
      const n = count(r, 'HAVE?', 1, MAX_HASHES) // [M-HAVE-1]
      const hashes: Buffer[] = []
      for (let i = 0; i < n; i++) hashes.push(r.copy(HASH_BYTES))
      return { type: 'haveQuery', requestId: id, hashes }
    }
    case T.HAVE_REPLY: {
      const id = requestId(r)
      const n = count(r, 'HAVE_REPLY', 1, MAX_HASHES)
      const bitmap = r.bytes(Math.ceil(n / 8))
      const have: boolean[] = []
      for (let i = 0; i < n; i++) have.push((bitmap[i >> 3]! & (0x80 >> (i & 7))) !== 0)
      const padding = n % 8 === 0 ? 0 : bitmap[bitmap.length - 1]! & (0xff >> (n % 8))
      if (padding !== 0) throw r.fail('HAVE_REPLY padding bits are not zero') // [M-HAVE-3]
      return { type: 'haveReply', requestId: id, have }
    }
    case T.LIST:
      return { type: 'list', requestId: requestId(r) }
    case T.LISTING: {
      const id = requestId(r)
      const flags = r.u8()
      if (flags & ~LISTING_LAST) throw r.fail(`reserved LISTING flags 0x${flags.toString(16)}`)
      const last = (flags & LISTING_LAST) !== 0
      const n = r.u16()
      if (n === 0 && !last) throw r.fail('an empty LISTING part must be the last') // [M-LIST-1]
      const entries: ListEntry[] = []
      for (let i = 0; i < n; i++) entries.push(listEntry(r, q))
      return { type: 'listing', requestId: id, last, entries }
    }
    case T.DIGEST_QUERY:
      return { type: 'digestQuery', requestId: requestId(r) }
    case T.DIGEST_REPLY: {
      const id = requestId(r)
      return { type: 'digestReply', requestId: id, digest: r.copy(HASH_BYTES) }
    }
    case T.CHUNK: {
      const uploadId = r.u32()
      const hash = r.copy(HASH_BYTES)
      const data = r.rest()
      if (data.length < 1 || data.length > MAX_CHUNK_BYTES) {
        throw r.fail(`CHUNK data is ${data.length} bytes, outside 1..${MAX_CHUNK_BYTES}`) // [M-CHUNK-1]
      }
      return { type: 'chunk', uploadId, hash, data }
    }
    case T.REFS: {
      const uploadId = r.u32()
      const n = count(r, 'REFS', 1, MAX_HASHES) // [M-REFS-1]
      const refs = []
      for (let i = 0; i < n; i++) {
        const hash = r.copy(HASH_BYTES)
        const length = r.u64()
        if (length < 1) throw r.fail('a ref has length 0')
        refs.push({ hash, length })
      }
      return { type: 'refs', uploadId, refs }
    }
    case T.COMMIT: {
      const uploadId = r.u32()
      const p = path(r, q)
      const m = mode(r)
      const mtimeNs = r.i64()
      const size = r.u64()
      return { type: 'commit', uploadId, path: p, mode: m, mtimeNs, size, contentId: r.copy(HASH_BYTES) }
    }
    case T.ABORT:
      return { type: 'abort', uploadId: r.u32() }
    case T.DELETE: {
      const id = requestId(r)
      return { type: 'delete', requestId: id, path: path(r, q) }
    }
    case T.MKDIR:
    case T.SETATTR: {
      const id = requestId(r)
      const p = path(r, q)
      const m = mode(r)
      const mtimeNs = r.i64()
      return { type: type === T.MKDIR ? 'mkdir' : 'setattr', requestId: id, path: p, mode: m, mtimeNs }
    }
    case T.SYMLINK: {
      const id = requestId(r)
      const p = path(r, q)
      const target = symlinkTarget(r)
      return { type: 'symlink', requestId: id, path: p, target, mtimeNs: r.i64() }
    }
    case T.RENAME: {
      const id = requestId(r)
      const from = path(r, q)
      return { type: 'rename', requestId: id, from, to: path(r, q) }
    }
    default:
      throw protocolError('SFM_ERR_UNKNOWN_TYPE', `unknown message type 0x${type.toString(16).padStart(2, '0')}`, { type })
  }
}

/** Decodes one frame body of the given type. Throws ProtocolError; never anything else. */
export function decodeBody(type: number, frameBody: Buffer): Message {
  if (!KNOWN_TYPES.has(type)) {
    throw protocolError('SFM_ERR_UNKNOWN_TYPE', `unknown message type 0x${type.toString(16).padStart(2, '0')}`, { type }) // [M-FRAME-2]
  }
  const r = new BodyReader(frameBody, type)
  const paths: Array<string | Buffer> = []
  const msg = body(type, r, paths)
  r.end()
  checkPaths(paths)
  return msg
}

const KNOWN_TYPES = new Set<number>(Object.values(MESSAGE_TYPE))
