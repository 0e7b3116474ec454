// The server's sessions over real sockets: a real SfmServer on 127.0.0.1, raw `node:net` peers that send
// hand-built bytes, and sfm's own Connection as the well-behaved client. Each bad connection must get the
// exact ERROR (request id 0) and be closed by the server; the server must keep serving everyone else.
import { randomBytes } from 'node:crypto'
import { existsSync, readFileSync, readdirSync } from 'node:fs'
import net from 'node:net'
import { join } from 'node:path'
import t from 'tap'
import { Connection, type Outcome } from '../src/client/connection.js'
import { digestBuffer } from '../src/digest.js'
import { hash128 } from '../src/hash.js'
import { silentLogger } from '../src/log.js'
import { encodeMessage } from '../src/protocol/codec.js'
import {
  ERROR_CODE,
  HASH_ALGO,
  MAGIC,
  MAX_FRAME_BYTES,
  MAX_HANDSHAKE_FRAME_BYTES,
  MESSAGE_TYPE,
  type ErrorName,
} from '../src/protocol/constants.js'
import type { ProtocolError } from '../src/protocol/errors.js'
import { FrameDecoder } from '../src/protocol/framer.js'
import type { Hello, Message, Welcome } from '../src/protocol/messages.js'
import { MirrorDigest } from '../src/protocol/mirror-digest.js'
import { SfmServer, type ServerOptions } from '../src/server/server.js'
import { Upload } from '../src/server/upload.js'
import { freePort, uploadFiles } from './helpers/procs.js'
import { testdir } from './helpers/testdir.js'

/** What the helpers use of a test: the top-level `t` and its subtests both have it. */
type Test = Pick<typeof t, 'teardown' | 'testdir' | 'ok' | 'equal' | 'same' | 'match' | 'notMatch'>

const HOST = '127.0.0.1'
/** Every wait in this file ends by this deadline. */
const WAIT_MS = 5_000
const MTIME_NS = 1_700_000_000_123_456_789n
const GOOD_ID = Buffer.alloc(16, 0x60)

// ---------------------------------------------------------------------------------------------
// Helpers

/** `p`, or a rejection naming `what` once `ms` have passed. */
function within<T>(p: Promise<T>, what: string, ms = WAIT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)
  })
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer))
}

/** One whole frame of this type around a hand-built body (PROTOCOL.md 6: length counts type + body). */
function frame(type: number, body: Buffer): Buffer {
  const header = Buffer.alloc(5)
  header.writeUInt32BE(1 + body.length, 0)
  header[4] = type
  return Buffer.concat([header, body])
}

/** A bare frame length: the header's first four bytes. */
const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(n, 0)
  return b
}

/** encodeMessage's parts as one buffer. */
const wire = (msg: Message): Buffer => Buffer.concat(encodeMessage(msg))

/** DELETE built by hand, so that any path bytes can be sent (the encoder does not validate). */
function deleteFrame(requestId: number, rawPath: Buffer): Buffer {
  const body = Buffer.alloc(4 + 2 + rawPath.length)
  body.writeUInt32BE(requestId, 0)
  body.writeUInt16BE(rawPath.length, 4)
  rawPath.copy(body, 6)
  return frame(MESSAGE_TYPE.DELETE, body)
}

function hello(clientId: Buffer, clientName = 'raw-peer'): Hello {
  return {
    type: 'hello',
    minVersion: 1,
    maxVersion: 1,
    clientId,
    clientNonce: randomBytes(16),
    algos: [HASH_ALGO.XXH3_128],
    clientName,
  }
}

function chunkOf(uploadId: number, data: Buffer): Message {
  return { type: 'chunk', uploadId, hash: hash128(data), data }
}

/** A raw socket that decodes what the server sends and notes when the server closes its side. */
class RawPeer {
  readonly messages: Message[] = []
  decodeError: ProtocolError | undefined
  /** The server sent FIN ('end'), or the socket is gone. */
  endedByServer = false
  closed = false
  private readonly decoder = new FrameDecoder({ maxFrameBytes: MAX_FRAME_BYTES, expectMagic: true })
  private wakers: (() => void)[] = []

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      const r = this.decoder.push(d)
      this.messages.push(...r.messages)
      if (r.error) this.decodeError = r.error
      this.wake()
    })
    socket.on('end', () => {
      this.endedByServer = true
      this.wake()
    })
    socket.on('close', () => {
      this.closed = true
      this.wake()
    })
    socket.on('error', () => {}) // EPIPE / ECONNRESET once the server has closed
  }

  static async connect(t: Test, port: number): Promise<RawPeer> {
    const socket = net.connect({ host: HOST, port })
    t.teardown(() => {
      socket.destroy()
    })
    await within(new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve)
      socket.once('error', reject)
    }), 'the raw socket to connect')
    return new RawPeer(socket)
  }

  write(...parts: Buffer[]): void {
    this.socket.write(Buffer.concat(parts))
  }

  private wake(): void {
    const w = this.wakers
    this.wakers = []
    for (const f of w) f()
  }

  async until(cond: () => boolean, what: string): Promise<void> {
    const wait = (async () => {
      while (!cond()) {
        if (this.closed) throw new Error(`the connection closed before ${what}`)
        await new Promise<void>((resolve) => this.wakers.push(resolve))
      }
    })()
    await within(wait, what)
  }

  /** MAGIC + HELLO, then the WELCOME. */
  async handshake(clientId: Buffer = randomBytes(16), name?: string): Promise<Welcome> {
    this.write(MAGIC, wire(hello(clientId, name)))
    await this.until(() => this.messages.length > 0, 'WELCOME')
    const first = this.messages[0]!
    if (first.type !== 'welcome') throw new Error(`expected WELCOME, got ${JSON.stringify(first)}`)
    return first
  }

  /** Waits until the server has closed its side. */
  async serverClosed(): Promise<void> {
    await this.until(() => this.endedByServer || this.closed, 'the server to close the connection')
  }
}

/** Asserts that the server ended `peer` with ERROR `code`, request id 0, and closed the connection. */
async function assertRefused(t: Test, peer: RawPeer, code: ErrorName, before: Message['type'][]): Promise<void> {
  await peer.serverClosed()
  t.ok(peer.endedByServer, 'the server closed the connection (FIN)')
  t.equal(peer.decodeError, undefined, 'what the server sent decodes: MAGIC, then whole frames')
  t.same(peer.messages.map((m) => m.type), [...before, 'error'], `the server sent ${[...before, 'ERROR'].join(', ')}`)
  const last = peer.messages[peer.messages.length - 1]
  t.match(last, { type: 'error', requestId: 0, code: ERROR_CODE[code] }, `ERROR ${code} with request id 0`)
}

interface Running {
  server: SfmServer
  /** The folder that holds the mirror root: `x` in it is outside the mirror. */
  dir: string
  root: string
  port: number
}

async function startServer(t: Test, opts: Partial<ServerOptions> = {}): Promise<Running> {
  const dir = testdir(t, { x: 'outside the mirror\n' })
  const root = join(dir, 'mirror')
  const server = await within(
    SfmServer.start({ root, host: HOST, port: 0, fsync: false, log: silentLogger, ...opts }),
    'the server to start',
  )
  t.teardown(() => within(server.stop(), 'the server to stop', 10_000))
  return { server, dir, root, port: server.address().port }
}

interface ClientOpts {
  clientId?: Buffer
  name?: string
  token?: Buffer | null
}

function openConnection(t: Test, port: number, o: ClientOpts = {}): Promise<Connection> {
  const p = Connection.open({
    host: HOST,
    port,
    identity: { clientId: o.clientId ?? GOOD_ID, clientName: o.name ?? 'good-client', token: o.token ?? null },
    log: silentLogger,
  })
  t.teardown(async () => {
    const conn = await p.catch(() => null)
    conn?.close()
  })
  return within(p, 'Connection.open')
}

/**
 * Opens a connection that the server is expected to refuse, and returns why it ended, and whether
 * Connection.open resolved first (it should not: a refused client never has a ready session).
 */
async function attemptRefused(t: Test, port: number, o: ClientOpts): Promise<{ opened: boolean; err: { code: string; message: string } }> {
  const attempt = Connection.open({
    host: HOST,
    port,
    identity: { clientId: o.clientId ?? GOOD_ID, clientName: o.name ?? 'good-client', token: o.token ?? null },
    log: silentLogger,
  })
  t.teardown(async () => (await attempt.catch(() => null))?.close())
  return within(
    attempt.then(
      async (conn) => ({ opened: true, err: await within(conn.closed, 'the refused connection to close') }),
      (err: unknown) => ({ opened: false, err: err as { code: string; message: string } }),
    ),
    'the client to be refused',
  )
}

/** Uploads `data` as CHUNKs and COMMITs it; `over` replaces COMMIT fields (or a chunk's hash) to break it. */
async function commitFile(
  conn: Connection,
  path: string,
  data: Buffer,
  over: { size?: number; contentId?: Buffer; chunkHash?: Buffer } = {},
): Promise<Outcome> {
  const d = digestBuffer(data)
  const id = await within(conn.openUpload(), 'an upload slot')
  for (let i = 0, off = 0; i < d.lengths.length; off += d.lengths[i++]!) {
    const hash = over.chunkHash ?? d.ids.subarray(i * 16, i * 16 + 16)
    conn.chunk(id, hash, data.subarray(off, off + d.lengths[i]!))
  }
  const reply = conn.commit({
    type: 'commit',
    uploadId: id,
    path,
    mode: 0o644,
    mtimeNs: MTIME_NS,
    size: over.size ?? data.length,
    contentId: over.contentId ?? d.contentId,
  })
  return within(reply, `the reply to COMMIT ${path}`)
}

/** A well-behaved client connects, LISTs and commits a small file, which then is in the mirror. */
async function assertServes(t: Test, run: Running, label: string, o: ClientOpts = {}): Promise<void> {
  const conn = await openConnection(t, run.port, o)
  const entries = await within(conn.list(), 'LIST')
  t.ok(Array.isArray(entries), `${label}: LIST answers`)
  const path = `served/${label.replace(/[^a-z0-9]+/gi, '-')}.txt`
  const data = Buffer.from(`the server still serves after: ${label}\n`)
  t.same(await commitFile(conn, path, data), { ok: true }, `${label}: COMMIT is OK`)
  t.same(readFileSync(join(run.root, path)), data, `${label}: the file is in the mirror`)
  const after = await within(conn.list(), 'LIST')
  t.ok(after.some((e) => e.path === path && e.kind === 'file' && e.size === data.length), `${label}: LIST shows it`)
  conn.close()
  await within(conn.closed, 'the connection to close')
}

// ---------------------------------------------------------------------------------------------
// Bad connections: the exact ERROR, the close, and a server that keeps serving

interface BadCase {
  name: string
  code: ErrorName
  /** Handshake first (the WELCOME then precedes the ERROR). */
  ready?: boolean
  send(peer: RawPeer, welcome: Welcome | null): void
}

const BAD_CASES: BadCase[] = [
  {
    name: 'wrong magic: an HTTP request line',
    code: 'SFM_ERR_BAD_MAGIC',
    send: (p) => p.write(Buffer.from('GET / HTTP/1.1\r\n')),
  },
  {
    name: "wrong magic: rsync's greeting",
    code: 'SFM_ERR_BAD_MAGIC',
    send: (p) => p.write(Buffer.from('@RSYNCD: 31.0\n')),
  },
  {
    name: 'a 4 GiB length, before any body is sent',
    code: 'SFM_ERR_FRAME_TOO_LARGE',
    send: (p) => p.write(MAGIC, u32(0xffffffff)),
  },
  {
    name: 'a 2 KiB frame before HELLO (the handshake limit)',
    code: 'SFM_ERR_FRAME_TOO_LARGE',
    send: (p) => p.write(MAGIC, frame(MESSAGE_TYPE.HELLO, Buffer.alloc(2047))),
  },
  {
    name: 'a frame one byte above MAX_HANDSHAKE_FRAME_BYTES before HELLO, header only',
    code: 'SFM_ERR_FRAME_TOO_LARGE',
    send: (p) => p.write(MAGIC, u32(MAX_HANDSHAKE_FRAME_BYTES + 1)),
  },
  {
    name: 'a frame above MAX_FRAME_BYTES once ready, header only',
    code: 'SFM_ERR_FRAME_TOO_LARGE',
    ready: true,
    send: (p) => p.write(u32(MAX_FRAME_BYTES + 1), Buffer.from([MESSAGE_TYPE.CHUNK])),
  },
  {
    name: 'a frame of length 0',
    code: 'SFM_ERR_FRAME_TOO_SMALL',
    send: (p) => p.write(MAGIC, u32(0)),
  },
  {
    name: 'an unknown type (0x09)',
    code: 'SFM_ERR_UNKNOWN_TYPE',
    send: (p) => p.write(MAGIC, frame(0x09, Buffer.alloc(0))),
  },
  {
    name: 'an unknown type (0xff) once ready',
    code: 'SFM_ERR_UNKNOWN_TYPE',
    ready: true,
    send: (p) => p.write(frame(0xff, Buffer.alloc(4))),
  },
  {
    name: 'a truncated HELLO body',
    code: 'SFM_ERR_MALFORMED',
    send: (p) => {
      const whole = wire(hello(randomBytes(16)))
      p.write(MAGIC, frame(MESSAGE_TYPE.HELLO, whole.subarray(5, 5 + 20)))
    },
  },
  {
    name: 'a HELLO with a byte after its last field',
    code: 'SFM_ERR_TRAILING_BYTES',
    send: (p) => {
      const whole = wire(hello(randomBytes(16)))
      p.write(MAGIC, frame(MESSAGE_TYPE.HELLO, Buffer.concat([whole.subarray(5), Buffer.from([0])])))
    },
  },
  {
    name: 'a request (LIST) before HELLO',
    code: 'SFM_ERR_UNEXPECTED',
    send: (p) => p.write(MAGIC, wire({ type: 'list', requestId: 1 })),
  },
  {
    name: 'a CHUNK before HELLO',
    code: 'SFM_ERR_UNEXPECTED',
    send: (p) => p.write(MAGIC, wire(chunkOf(1, Buffer.from('early')))),
  },
  {
    name: 'PING before HELLO',
    code: 'SFM_ERR_UNEXPECTED',
    send: (p) => p.write(MAGIC, wire({ type: 'ping' })),
  },
  {
    name: 'HELLO twice',
    code: 'SFM_ERR_UNEXPECTED',
    ready: true,
    send: (p) => p.write(wire(hello(GOOD_ID))),
  },
  {
    name: 'a server-direction message (OK) from the client',
    code: 'SFM_ERR_UNEXPECTED',
    ready: true,
    send: (p) => p.write(wire({ type: 'ok', requestId: 1 })),
  },
  {
    name: 'DELETE with request id 0',
    code: 'SFM_ERR_BAD_ID',
    ready: true,
    send: (p) => p.write(wire({ type: 'delete', requestId: 0, path: 'a' })),
  },
  {
    name: 'LIST with request id 0',
    code: 'SFM_ERR_BAD_ID',
    ready: true,
    send: (p) => p.write(wire({ type: 'list', requestId: 0 })),
  },
  {
    name: 'HAVE? with request id 0',
    code: 'SFM_ERR_BAD_ID',
    ready: true,
    send: (p) => p.write(wire({ type: 'haveQuery', requestId: 0, hashes: [randomBytes(16)] })),
  },
  {
    name: 'CHUNK with upload id 0',
    code: 'SFM_ERR_BAD_ID',
    ready: true,
    send: (p) => p.write(wire(chunkOf(0, Buffer.from('zero')))),
  },
  {
    name: 'a DELETE whose id is an open upload',
    code: 'SFM_ERR_BAD_ID',
    ready: true,
    send: (p) => p.write(wire(chunkOf(7, Buffer.from('open'))), wire({ type: 'delete', requestId: 7, path: 'a' })),
  },
  {
    name: 'a LIST whose id is an open upload',
    code: 'SFM_ERR_BAD_ID',
    ready: true,
    send: (p) => p.write(wire(chunkOf(9, Buffer.from('open'))), wire({ type: 'list', requestId: 9 })),
  },
  {
    name: 'more CHUNK upload ids than max_open_uploads',
    code: 'SFM_ERR_LIMIT',
    ready: true,
    send: (p, w) => {
      const frames: Buffer[] = []
      for (let id = 1; id <= w!.maxOpenUploads + 1; id++) frames.push(wire(chunkOf(id, Buffer.from(`upload ${id}`))))
      p.write(...frames)
    },
  },
  {
    name: 'DELETE of ../x',
    code: 'SFM_ERR_BAD_PATH',
    ready: true,
    send: (p) => p.write(deleteFrame(1, Buffer.from('../x'))),
  },
  {
    name: 'DELETE of an absolute path',
    code: 'SFM_ERR_BAD_PATH',
    ready: true,
    send: (p) => p.write(deleteFrame(1, Buffer.from('/x'))),
  },
  {
    name: 'RENAME to ../x',
    code: 'SFM_ERR_BAD_PATH',
    ready: true,
    send: (p) => p.write(wire({ type: 'rename', requestId: 1, from: 'a', to: '../x' })),
  },
  {
    name: "DELETE of the server's own .sfm/mirror-id",
    code: 'SFM_ERR_BAD_PATH',
    ready: true,
    send: (p) => p.write(deleteFrame(1, Buffer.from('.sfm/mirror-id'))),
  },
  {
    name: 'DIGEST? on a version 1 session: an unknown type there [M-DIGEST-2]',
    code: 'SFM_ERR_UNKNOWN_TYPE',
    ready: true,
    send: (p) => p.write(wire({ type: 'digestQuery', requestId: 1 })),
  },
  {
    name: 'DELETE of a path that is not UTF-8',
    code: 'SFM_ERR_BAD_PATH',
    ready: true,
    send: (p) => p.write(deleteFrame(1, Buffer.from([0x61, 0xff, 0x62]))),
  },
]

t.test('a bad connection gets its exact ERROR and is closed; the server keeps serving', async (t) => {
  const run = await startServer(t)
  const outside = readFileSync(join(run.dir, 'x'))
  const mirrorId = readFileSync(join(run.root, '.sfm', 'mirror-id'))
  // One server for every case, in sequence: each bad connection must leave it able to serve the next.
  for (const bad of BAD_CASES) {
    await t.test(bad.name, async (t) => {
      const peer = await RawPeer.connect(t, run.port)
      const welcome = bad.ready ? await peer.handshake() : null
      bad.send(peer, welcome)
      await assertRefused(t, peer, bad.code, bad.ready ? ['welcome'] : [])
      await assertServes(t, run, bad.name)
    })
  }
  t.same(readFileSync(join(run.dir, 'x')), outside, 'x beside the mirror root is unchanged')
  t.same(readdirSync(run.dir).sort(), ['mirror', 'x'], 'nothing new beside the mirror root')
  t.same(readFileSync(join(run.root, '.sfm', 'mirror-id')), mirrorId, '.sfm/mirror-id is unchanged')
})

t.test('DIGEST_REPLY is the mirror digest of what LIST shows, after every change sent before it [M-DIGEST-3]', async (t) => {
  const run = await startServer(t)
  const conn = await openConnection(t, run.port)
  t.equal(conn.welcome.version, 2, 'sfm\'s client and server agree on version 2')
  const digestOfListing = async (): Promise<string> => {
    const d = new MirrorDigest()
    for (const e of await within(conn.list(), 'LIST')) d.add(e)
    return d.value().toString('hex')
  }
  const empty = await within(conn.digest(), 'DIGEST_REPLY')
  t.equal(empty.toString('hex'), hash128(Buffer.alloc(0)).toString('hex'), 'an empty mirror: hash("")')

  // not awaited: DIGEST? is answered after them [M-SEM-4]
  const replies = [
    conn.change((id) => ({ type: 'mkdir', requestId: id, path: 'd', mode: 0o755, mtimeNs: MTIME_NS })),
    commitFile(conn, 'd/a.txt', Buffer.from('alpha\n')),
    conn.change((id) => ({ type: 'symlink', requestId: id, path: 'd/link', target: 'a.txt', mtimeNs: MTIME_NS })),
  ]
  const afterChanges = await within(conn.digest(), 'DIGEST_REPLY after the changes')
  t.same(await Promise.all(replies), [{ ok: true }, { ok: true }, { ok: true }], 'the changes succeeded')
  t.not(afterChanges.toString('hex'), empty.toString('hex'), 'the digest changed with them')
  t.equal(afterChanges.toString('hex'), await digestOfListing(), 'it is the digest of the listing')

  const touched = conn.change((id) => ({ type: 'setattr', requestId: id, path: 'd/a.txt', mode: 0o644, mtimeNs: MTIME_NS + 1n }))
  const afterTouch = await within(conn.digest(), 'DIGEST_REPLY after SETATTR')
  t.same(await touched, { ok: true })
  t.not(afterTouch.toString('hex'), afterChanges.toString('hex'), 'one nanosecond of mtime changes it')
  t.equal(afterTouch.toString('hex'), await digestOfListing(), 'and it is again the digest of the listing')
})

t.test('PING gets PONG; ERROR with request id 0 from the client ends the session without a reply', async (t) => {
  const run = await startServer(t)
  const peer = await RawPeer.connect(t, run.port)
  await peer.handshake()
  peer.write(wire({ type: 'ping' }))
  await peer.until(() => peer.messages.length >= 2, 'PONG')
  t.same(peer.messages[1], { type: 'pong' }, 'PONG [M-PING-1]')
  peer.write(wire({ type: 'error', requestId: 0, code: ERROR_CODE.SFM_ERR_SHUTDOWN, message: 'client stopping' }))
  await peer.serverClosed()
  t.ok(peer.endedByServer, 'the server closes its side')
  t.same(peer.messages.map((m) => m.type), ['welcome', 'pong'], 'and sends nothing more')
  await assertServes(t, run, 'a client ERROR with id 0')
})

t.test('a symlink in the mirror is never followed: a COMMIT below one pointing outside is SFM_ERR_NOT_DIR [M-SEM-6]', async (t) => {
  const run = await startServer(t)
  const conn = await openConnection(t, run.port)
  t.same(
    await within(conn.change((id) => ({ type: 'symlink', requestId: id, path: 'escape', target: '..', mtimeNs: MTIME_NS })), 'SYMLINK'),
    { ok: true },
    'a symlink to .. is data, and is accepted [M-SYMLINK-1]',
  )
  const outcome = await commitFile(conn, 'escape/x', Buffer.from('must not land beside the mirror\n'))
  t.match(outcome, { ok: false, code: 'SFM_ERR_NOT_DIR' }, 'SFM_ERR_NOT_DIR [M-COMMIT-4]')
  t.equal(readFileSync(join(run.dir, 'x'), 'utf8'), 'outside the mirror\n', 'x beside the mirror root is unchanged')
  const del = await within(conn.change((id) => ({ type: 'delete', requestId: id, path: 'escape/x' })), 'DELETE')
  t.ok(del.ok || del.code === 'SFM_ERR_NOT_DIR', `DELETE below the symlink: ${JSON.stringify(del)}`)
  t.ok(existsSync(join(run.dir, 'x')), 'x beside the mirror root still exists')
  t.ok(conn.isOpen, 'the connection stays open')
})

t.test('a COMMIT beyond max_inflight is SFM_ERR_LIMIT, and its upload leaves no temporary file', async (t) => {
  const run = await startServer(t, { maxInflight: 1 })
  const peer = await RawPeer.connect(t, run.port)
  const welcome = await peer.handshake()
  t.equal(welcome.maxInflight, 1, 'WELCOME announces max_inflight 1')
  // bigger than the first CHUNK the server holds in memory until the COMMIT: it opens a file at once
  const data = Buffer.from('an upload whose COMMIT is over the limit\n'.repeat(1000))
  const d = digestBuffer(data)
  peer.write(wire(chunkOf(5, data)))
  // The upload's temporary file exists before its COMMIT is refused, so its removal can be checked.
  const opened = Date.now() + WAIT_MS
  while (uploadFiles(run.root).length === 0 && Date.now() < opened) await new Promise((r) => setTimeout(r, 10))
  t.equal(uploadFiles(run.root).length, 1, 'the open upload has its temporary file')
  peer.write(
    wire({ type: 'list', requestId: 1 }), // the one request allowed in flight
    wire({ type: 'commit', uploadId: 5, path: 'over.txt', mode: 0o644, mtimeNs: MTIME_NS, size: data.length, contentId: d.contentId }),
  )
  await assertRefused(t, peer, 'SFM_ERR_LIMIT', ['welcome'])
  // The closed session drops its open uploads; the one whose COMMIT was refused must go too.
  const deadline = Date.now() + 2_000
  while (uploadFiles(run.root).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
  t.same(uploadFiles(run.root), [], 'no temporary file is left in .sfm/tmp')
  t.notOk(existsSync(join(run.root, 'over.txt')), 'the refused COMMIT is not applied')
  await assertServes(t, run, 'max_inflight exceeded')
})

// ---------------------------------------------------------------------------------------------
// One client per mirror [M-SEM-1]

t.test('a second client id while the first is connected gets SFM_ERR_BUSY naming the first', async (t) => {
  const run = await startServer(t)
  const first = await openConnection(t, run.port, { clientId: Buffer.alloc(16, 0xa1), name: 'first-client' })

  t.test('through Connection.open', async (t) => {
    const result = await attemptRefused(t, run.port, { clientId: Buffer.alloc(16, 0xb2), name: 'second-client' })
    t.equal(result.err.code, 'SFM_ERR_BUSY', 'SFM_ERR_BUSY')
    t.match(result.err.message, /first-client/, 'the text names the first client')
    // PROTOCOL.md 8.1 answers such a HELLO with ERROR BUSY alone: a WELCOME first would make
    // Connection.open resolve with a session that is already being closed.
    t.equal(result.opened, false, 'Connection.open rejects: the second client never has a ready session')
  })

  t.test('on the wire: the answer to HELLO is ERROR BUSY, and the server closes', async (t) => {
    const peer = await RawPeer.connect(t, run.port)
    peer.write(MAGIC, wire(hello(Buffer.alloc(16, 0xc3), 'third-client')))
    await peer.serverClosed()
    t.ok(peer.endedByServer, 'the server closed the connection')
    const last = peer.messages[peer.messages.length - 1]
    t.match(last, { type: 'error', requestId: 0, code: ERROR_CODE.SFM_ERR_BUSY, message: /first-client/ }, 'ERROR BUSY naming the first client')
    t.same(peer.messages.map((m) => m.type), ['error'], 'no WELCOME before it (PROTOCOL.md 8.1)')
  })

  await t.test('the first client is not disturbed', async (t) => {
    t.ok(first.isOpen, 'still open')
    t.same(await commitFile(first, 'first.txt', Buffer.from('first\n')), { ok: true }, 'commits')
    t.ok((await within(first.list(), 'LIST')).some((e) => e.path === 'first.txt'), 'lists')
  })
})

t.test('the same client id again ends the old session; the new one works', async (t) => {
  const run = await startServer(t)
  const id = Buffer.alloc(16, 0xd4)
  const old = await openConnection(t, run.port, { clientId: id, name: 'restarted-client' })
  t.same(await commitFile(old, 'before.txt', Buffer.from('before restart\n')), { ok: true }, 'the old session works at first')
  const fresh = await openConnection(t, run.port, { clientId: id, name: 'restarted-client' })
  const ended = await within(old.closed, 'the old session to be closed')
  t.equal(ended.code, 'SFM_ERR_SHUTDOWN', 'the old session is ended by the server with SFM_ERR_SHUTDOWN')
  t.notOk(old.isOpen, 'the old connection is closed')
  t.ok(fresh.isOpen, 'the new connection is open')
  const entries = await within(fresh.list(), 'LIST')
  t.ok(entries.some((e) => e.path === 'before.txt'), 'the new session lists what the old one wrote')
  t.same(await commitFile(fresh, 'after.txt', Buffer.from('after restart\n')), { ok: true }, 'and commits')
  t.same(readFileSync(join(run.root, 'after.txt'), 'utf8'), 'after restart\n')
  // the owner is the new session: another id is still refused
  const intruder = await attemptRefused(t, run.port, { clientId: Buffer.alloc(16, 0xe5), name: 'intruder' })
  t.equal(intruder.err.code, 'SFM_ERR_BUSY', 'another id is BUSY')
  t.match(intruder.err.message, /restarted-client/, 'naming the new session')
})

// ---------------------------------------------------------------------------------------------
// Request-level failures: the request fails, the connection stays

t.test('a CHUNK whose hash does not match its data fails its COMMIT with SFM_ERR_HASH_MISMATCH [M-CHUNK-2]', async (t) => {
  const run = await startServer(t)
  const conn = await openConnection(t, run.port)
  const data = Buffer.from('the data the client meant to send\n')
  const wrong = hash128(Buffer.from('something else'))
  const outcome = await commitFile(conn, 'bad/hash.txt', data, { chunkHash: wrong })
  t.match(outcome, { ok: false, code: 'SFM_ERR_HASH_MISMATCH' }, 'SFM_ERR_HASH_MISMATCH')
  t.notOk(existsSync(join(run.root, 'bad/hash.txt')), 'nothing appears at the path')
  t.notOk(existsSync(join(run.root, 'bad')), 'not even its parent')
  t.same(uploadFiles(run.root), [], 'no temporary file is left')
  t.ok(conn.isOpen, 'the connection stays open')
  const entries = await within(conn.list(), 'LIST')
  t.notOk(entries.some((e) => e.path.startsWith('bad')), 'LIST does not show it')
  t.same(await commitFile(conn, 'bad/hash.txt', data), { ok: true }, 'the same COMMIT with the right hash works')
  t.same(readFileSync(join(run.root, 'bad/hash.txt')), data)
})

t.test('a REFS to an unknown hash fails its COMMIT with SFM_ERR_MISSING naming the id [M-REFS-2]', async (t) => {
  const run = await startServer(t)
  const conn = await openConnection(t, run.port)
  const unknown = randomBytes(16)
  const id = await within(conn.openUpload(), 'an upload slot')
  conn.refs(id, [{ hash: unknown, length: 100 }])
  const reply = conn.commit({ type: 'commit', uploadId: id, path: 'refd.bin', mode: 0o644, mtimeNs: MTIME_NS, size: 100, contentId: unknown })
  const outcome = await within(reply, 'the reply to COMMIT')
  t.match(outcome, { ok: false, code: 'SFM_ERR_MISSING' }, 'SFM_ERR_MISSING')
  t.match(outcome.ok ? '' : outcome.message, unknown.toString('hex'), 'the text names the missing id in hex')
  t.notOk(existsSync(join(run.root, 'refd.bin')), 'nothing appears')
  t.same(uploadFiles(run.root), [], 'no temporary file is left')
  t.ok(conn.isOpen, 'the connection stays open')
  t.ok(Array.isArray(await within(conn.list(), 'LIST')), 'and answers')
})

t.test('a REFS to content the server has builds the file from it', async (t) => {
  const run = await startServer(t)
  const conn = await openConnection(t, run.port)
  const data = randomBytes(300 * 1024)
  const d = digestBuffer(data)
  t.same(await commitFile(conn, 'original.bin', data), { ok: true })
  const id = await within(conn.openUpload(), 'an upload slot')
  conn.refs(id, [{ hash: d.contentId, length: data.length }])
  const reply = conn.commit({ type: 'commit', uploadId: id, path: 'copy.bin', mode: 0o600, mtimeNs: MTIME_NS, size: data.length, contentId: d.contentId })
  t.same(await within(reply, 'the reply to COMMIT'), { ok: true }, 'OK')
  t.same(readFileSync(join(run.root, 'copy.bin')), data, 'the copy has the same bytes')
})

t.test('a COMMIT whose size or content id disagrees with the upload is SFM_ERR_CONTENT_MISMATCH [M-COMMIT-1]', async (t) => {
  const run = await startServer(t)
  const conn = await openConnection(t, run.port)
  const data = randomBytes(200 * 1024)
  const rows: [string, { size?: number; contentId?: Buffer }][] = [
    ['a size one larger', { size: data.length + 1 }],
    ['a size one smaller', { size: data.length - 1 }],
    ['a size of 0', { size: 0 }],
    ['a random content id', { contentId: randomBytes(16) }],
    ['the content id of other bytes', { contentId: digestBuffer(Buffer.from('other')).contentId }],
  ]
  for (const [name, over] of rows) {
    const outcome = await commitFile(conn, 'mismatch.bin', data, over)
    t.match(outcome, { ok: false, code: 'SFM_ERR_CONTENT_MISMATCH' }, `${name}: SFM_ERR_CONTENT_MISMATCH`)
    t.notOk(existsSync(join(run.root, 'mismatch.bin')), `${name}: nothing appears`)
    t.same(uploadFiles(run.root), [], `${name}: no temporary file is left`)
    t.ok(conn.isOpen, `${name}: the connection stays open`)
  }
  t.same(await commitFile(conn, 'mismatch.bin', data), { ok: true }, 'the right COMMIT then works on the same connection')
  t.same(readFileSync(join(run.root, 'mismatch.bin')), data)
})

// ---------------------------------------------------------------------------------------------
// Authentication end to end [M-AUTH-1], [M-AUTH-2]

t.test('with a token on the server', async (t) => {
  const token = Buffer.from('s3cret token')
  const run = await startServer(t, { token })

  await t.test('a client with a wrong token gets SFM_ERR_AUTH_FAILED from the server', async (t) => {
    await t.rejects(
      openConnection(t, run.port, { token: Buffer.from('wrong token'), clientId: Buffer.alloc(16, 0x77) }),
      { code: 'SFM_ERR_AUTH_FAILED', message: /^server: / },
    )
  })

  await t.test('a client without a token refuses the server (AUTH_REQUIRED)', async (t) => {
    await t.rejects(openConnection(t, run.port, { token: null }), { code: 'SFM_ERR_AUTH_FAILED' })
  })

  await t.test('on the wire: WELCOME sets AUTH_REQUIRED; a request before AUTH is SFM_ERR_UNEXPECTED', async (t) => {
    const peer = await RawPeer.connect(t, run.port)
    const welcome = await peer.handshake()
    t.equal(welcome.authRequired, true, 'AUTH_REQUIRED')
    peer.write(wire({ type: 'list', requestId: 1 }))
    await assertRefused(t, peer, 'SFM_ERR_UNEXPECTED', ['welcome'])
  })

  await t.test('on the wire: a wrong MAC is SFM_ERR_AUTH_FAILED', async (t) => {
    const peer = await RawPeer.connect(t, run.port)
    await peer.handshake()
    peer.write(wire({ type: 'auth', mac: randomBytes(32) }))
    await assertRefused(t, peer, 'SFM_ERR_AUTH_FAILED', ['welcome'])
  })

  await t.test('a client with the same token works', async (t) => {
    await assertServes(t, run, 'the right token', { token })
  })

  await t.test('while one client holds the mirror: BUSY only after a correct AUTH [M-SEM-1]', async (t) => {
    const owner = await openConnection(t, run.port, { token, clientId: Buffer.alloc(16, 0x91), name: 'token-owner' })
    const busy = await attemptRefused(t, run.port, { token, clientId: Buffer.alloc(16, 0x92), name: 'second' })
    t.equal(busy.err.code, 'SFM_ERR_BUSY', 'an authenticated second client gets BUSY')
    t.match(busy.err.message, /token-owner/, 'naming the owner')
    t.equal(busy.opened, false, 'Connection.open rejects')
    const stranger = await attemptRefused(t, run.port, { token: Buffer.from('guess'), clientId: Buffer.alloc(16, 0x93), name: 'stranger' })
    t.equal(stranger.err.code, 'SFM_ERR_AUTH_FAILED', 'a client with a wrong token gets AUTH_FAILED, not BUSY')
    t.notMatch(stranger.err.message, /token-owner/, 'and does not learn who holds the mirror')
    t.ok(owner.isOpen, 'the owner is undisturbed')
    t.ok(Array.isArray(await within(owner.list(), 'LIST')), 'and is served')
  })
})

t.test('a client with a token refuses a server without one [M-AUTH-2]', async (t) => {
  const run = await startServer(t)
  await t.rejects(openConnection(t, run.port, { token: Buffer.from('s3cret') }), { code: 'SFM_ERR_AUTH_FAILED' })
  await assertServes(t, run, 'a refused server')
})

// ---------------------------------------------------------------------------------------------
// HAVE? answers

t.test('HAVE_REPLY says yes for the chunk ids and content id of a committed file, no for others', async (t) => {
  const run = await startServer(t)
  const conn = await openConnection(t, run.port)
  const data = randomBytes(400 * 1024)
  const d = digestBuffer(data)
  const chunkIds = Array.from({ length: d.lengths.length }, (_, i) => Buffer.from(d.ids.subarray(i * 16, i * 16 + 16)))
  t.ok(chunkIds.length >= 2, `the file has ${chunkIds.length} chunks`)
  t.notOk(chunkIds.some((c) => c.equals(d.contentId)), 'its content id is a node id, not a chunk id')
  const randoms = [randomBytes(16), randomBytes(16), randomBytes(16)]

  t.same(await within(conn.have([...chunkIds, d.contentId]), 'HAVE?'), [...chunkIds, d.contentId].map(() => false), 'before the COMMIT: no')
  t.same(await commitFile(conn, 'have.bin', data), { ok: true })

  const asked = [randoms[0]!, ...chunkIds, randoms[1]!, d.contentId, randoms[2]!]
  const expected = [false, ...chunkIds.map(() => true), false, true, false]
  t.same(await within(conn.have(asked), 'HAVE?'), expected, 'chunk ids and content id: yes; random ids: no; in the order asked')

  // The same on the wire: the bitmap's first hash is the most significant bit of the first byte.
  const peer = await RawPeer.connect(t, run.port)
  await peer.handshake(GOOD_ID, 'raw-have') // same client id: replaces `conn`
  peer.write(wire({ type: 'haveQuery', requestId: 5, hashes: asked }))
  await peer.until(() => peer.messages.length >= 2, 'HAVE_REPLY')
  t.same(peer.messages[1], { type: 'haveReply', requestId: 5, have: expected }, 'raw HAVE_REPLY')
})

t.test('HAVE? questions wait for the end of the turn, up to 64 ids: from then on they go out at once', async (t) => {
  const run = await startServer(t)
  const conn = await openConnection(t, run.port)
  const ids = (n: number) => Array.from({ length: n }, () => randomBytes(16))
  const before = conn.wireBytesSent
  const few = conn.have(ids(63))
  t.equal(conn.wireBytesSent, before, '63 ids: nothing handed to the socket yet (more questions of this turn may join them)')
  const more = conn.have(ids(1))
  const sent = conn.wireBytesSent - before
  t.ok(sent >= 64 * 16, `the 64th id: its frame is handed to the socket at once (${sent} bytes), while the caller keeps working`)
  t.same(await within(Promise.all([few, more]), 'the answers'), [ids(63).map(() => false), [false]], 'both questions answered: no')
})

// ---------------------------------------------------------------------------------------------
// Durability of a burst [M-SEM-5]

t.test('with fsync, a burst of small files: data flushed before each link, each reply after a flush that followed its link, batches sharing flushes', async (t) => {
  const run = await startServer(t, { fsync: true })
  const mirror = run.server.mirror
  t.ok(mirror.canFlushAll, 'the native addon is built: batches flush with syncfs')
  // One log of what happened in which order: each file's staging (and whether it was flushed on its
  // own), its link into place, each syncfs, and each reply the client got.
  const events: Array<{ what: 'stage' | 'link' | 'flush-start' | 'flush-end' | 'batch' | 'reply'; path?: string; own?: boolean }> = []
  const stage = Upload.prototype.stage
  Upload.prototype.stage = function (this: Upload, commit, flush) {
    events.push({ what: 'stage', path: commit.path, own: flush })
    return stage.call(this, commit, flush)
  }
  t.teardown(() => void (Upload.prototype.stage = stage))
  const { flushAll, commitFile: link, startBatch } = mirror
  mirror.flushAll = async () => {
    events.push({ what: 'flush-start' })
    await flushAll.call(mirror)
    await new Promise((resolve) => setTimeout(resolve, 5)) // a slow disk: commits pile up meanwhile
    events.push({ what: 'flush-end' })
  }
  mirror.commitFile = (path, staged) => {
    events.push({ what: 'link', path })
    return link.call(mirror, path, staged)
  }
  mirror.startBatch = () => {
    events.push({ what: 'batch' })
    startBatch.call(mirror)
  }

  const conn = await openConnection(t, run.port)
  const files = 2_000 // at least 4 batches of at most 512
  const replies = Array.from({ length: files }, (_, i) => {
    const path = `burst/f${i}.txt`
    return commitFile(conn, path, Buffer.from(`file ${i}\n`.repeat(1 + (i % 50)))).then((o) => {
      events.push({ what: 'reply', path })
      return o
    })
  })
  const outcomes = await within(Promise.all(replies), 'the replies to the burst', 60_000)
  t.ok(outcomes.every((o) => o.ok), 'every COMMIT is OK')
  t.equal(readdirSync(join(run.root, 'burst')).length, files, 'every file is in the mirror')

  const at = (what: string, path: string) => events.findIndex((e) => e.what === what && e.path === path)
  const flushedBetween = (from: number, to: number) =>
    events.some((e, i) => e.what === 'flush-start' && i > from && i < to && events.slice(i, to).some((f) => f.what === 'flush-end'))
  let unflushedData = 0
  let unflushedLink = 0
  for (let i = 0; i < files; i++) {
    const path = `burst/f${i}.txt`
    const staged = at('stage', path)
    const linked = at('link', path)
    const replied = at('reply', path)
    if (!(staged >= 0 && staged < linked && linked < replied)) {
      t.fail(`${path}: staged at ${staged}, linked at ${linked}, answered at ${replied}`)
      continue
    }
    if (events[staged]!.own) continue // flushed on its own while staged, its directory with fsync(2)
    if (!flushedBetween(staged, linked)) unflushedData++
    if (!flushedBetween(linked, replied)) unflushedLink++
  }
  t.equal(unflushedData, 0, 'a file left for the group flush is linked only after a whole syncfs that began after it was written')
  t.equal(unflushedLink, 0, 'and is answered only after a whole syncfs that began after it was linked')
  const batches = events.filter((e) => e.what === 'batch').length
  const flushes = events.filter((e) => e.what === 'flush-start').length
  t.ok(batches >= 4, `${batches} batches`)
  t.ok(flushes <= batches + 1, `${flushes} syncfs for ${batches} batches: a batch's data and the previous batch's links share one`)
})

t.test('a client that connects while the mirror is still opening is served once it is open', async (t) => {
  // --adopt over files the journal does not cover: opening reads and indexes all of them
  const files = Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`f${i}`, randomBytes(256 << 10)]))
  const dir = testdir(t, { m: files })
  const port = await freePort()
  let open = false
  const starting = SfmServer.start({ root: join(dir, 'm'), adopt: true, host: HOST, port, fsync: false, log: silentLogger }).then((s) => {
    open = true
    return s
  })
  t.teardown(async () => (await starting.catch(() => null))?.stop())
  // connect as soon as the port takes connections (bounded: 2,000 tries, 1 ms apart)
  let peer: RawPeer | null = null
  let dropped: net.Socket | null = null
  for (let i = 0; i < 2_000 && !peer; i++) {
    const socket = net.connect({ host: HOST, port })
    const up = await new Promise<boolean>((resolve) => {
      socket.once('connect', () => resolve(true))
      socket.once('error', () => resolve(false))
    })
    if (!up) {
      await new Promise((r) => setTimeout(r, 1))
      continue
    }
    dropped = socket // the first one leaves before the mirror is open: its place in the queue must go
    socket.destroy()
    peer = await RawPeer.connect(t, port)
  }
  t.ok(dropped, 'the port took connections')
  t.notOk(open, 'both connections were made before the mirror was open')
  const welcome = await peer!.handshake()
  t.equal(welcome.type, 'welcome', 'the waiting connection got its WELCOME')
  const server = await within(starting, 'the server to start')
  t.ok(open, 'and the server is up')
  t.equal(server.mirror.catalog.top.children.size, 200, 'with the adopted files in its catalog')
})
