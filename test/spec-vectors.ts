// Runs every golden vector of spec/ (hand-written from PROTOCOL.md) against the codec and the framer.
// One subtest per file, so a new vector needs no code.
import t from 'tap'
import { createHmac } from 'node:crypto'
import { relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { isDeepStrictEqual } from 'node:util'
import { decodeBody, encodeMessage } from '../src/protocol/codec.js'
import { FrameDecoder } from '../src/protocol/framer.js'
import { MAX_FRAME_BYTES, MAX_HANDSHAKE_FRAME_BYTES } from '../src/protocol/constants.js'
import type { ProtocolError } from '../src/protocol/errors.js'
import type { Message } from '../src/protocol/messages.js'
import { hexOf, listVectors, messageFromJson, messageToJson, readVector, type Json } from './helpers/vectors.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const load = (dir: string) =>
  listVectors(fileURLToPath(new URL(`../spec/${dir}`, import.meta.url))).map(file => ({
    name: relative(root, file),
    vector: readVector(file),
  }))

const PING_FRAME = Buffer.from('0000000105', 'hex')

// Splitting a frame at every offset, or feeding it byte by byte, costs O(n^2) for a frame of n bytes. Above
// this size the body bytes in the middle all behave alike, so only the offsets near both ends and a stride
// through the middle are tried, and the middle is fed in pieces of that stride.
const EVERY_OFFSET_UP_TO_BYTES = 16_384
const EDGE_BYTES = 256
const MIDDLE_STRIDE_BYTES = 4_093

function splitOffsets(length: number): number[] {
  const offsets: number[] = []
  for (let i = 1; i < length; i++) {
    const nearEdge = i <= EDGE_BYTES || length - i <= EDGE_BYTES
    if (length <= EVERY_OFFSET_UP_TO_BYTES || nearEdge || i % MIDDLE_STRIDE_BYTES === 0) offsets.push(i)
  }
  return offsets
}

function* oneByteAtATime(bytes: Buffer): Generator<Buffer> {
  let start = 0
  for (const end of [...splitOffsets(bytes.length), bytes.length]) {
    yield bytes.subarray(start, end)
    start = end
  }
}

function newDecoder(maxFrameBytes = MAX_FRAME_BYTES, expectMagic = false): FrameDecoder {
  return new FrameDecoder({ maxFrameBytes, expectMagic })
}

function hexOfFrame(msg: Message): string {
  return Buffer.concat(encodeMessage(msg)).toString('hex')
}

/** Feeds pieces to one decoder; gathers the messages and the first error. */
function feed(decoder: FrameDecoder, pieces: Iterable<Buffer>): { messages: Json[]; error?: ProtocolError } {
  const messages: Json[] = []
  let error: ProtocolError | undefined
  for (const piece of pieces) {
    const result = decoder.push(piece)
    messages.push(...result.messages.map(messageToJson))
    error ??= result.error
  }
  return error === undefined ? { messages } : { messages, error }
}

/** The offsets at which two pushes do not give exactly the expected message. */
function badSplits(bytes: Buffer, expected: Json): number[] {
  return splitOffsets(bytes.length).filter(at => {
    const { messages, error } = feed(newDecoder(), [bytes.subarray(0, at), bytes.subarray(at)])
    return error !== undefined || messages.length !== 1 || !isDeepStrictEqual(messages[0], expected)
  })
}

function mac(auth: Json, label: string): string {
  const input = Buffer.concat([Buffer.from(label), ...[auth.clientNonce, auth.serverNonce, auth.clientId].map(h => Buffer.from(h, 'hex'))])
  return createHmac('sha256', Buffer.from(auth.token)).update(input).digest('hex')
}

const valid = load('valid').map(v => ({ ...v, bytes: hexOf(v.vector.hex) }))
const invalid = load('invalid')
const sessions = load('session')

t.test('valid vectors', async t => {
  for (const { name, vector, bytes } of valid) {
    t.test(`${name}: ${vector.description}`, async t => {
      const expected = vector.message
      const hex = bytes.toString('hex')
      t.equal(bytes.readUInt32BE(0), bytes.length - 4, 'the vector\'s length prefix counts the type byte and the body')
      const decoded = decodeBody(bytes[4]!, bytes.subarray(5))
      t.strictSame(messageToJson(decoded), expected, 'decodes to the message')
      t.equal(hexOfFrame(messageFromJson(expected)), hex, 'encodes the message to the bytes')
      t.equal(hexOfFrame(decoded), hex, 'encodes what it decoded back to the same bytes')
      t.strictSame(badSplits(bytes, expected), [], 'frames the message wherever the bytes are split in two')
      t.strictSame(feed(newDecoder(), oneByteAtATime(bytes)), { messages: [expected] }, 'frames the message fed one byte at a time')
      if (vector.auth) {
        const { auth } = vector
        t.equal(auth.token, auth.secret.trim(), 'the token is the secret without surrounding white space')
        t.equal(mac(auth, 'sfm-v1 client'), auth.clientMac, 'client_mac is HMAC-SHA-256 of section 10')
        t.equal(mac(auth, 'sfm-v1 server'), auth.serverMac, 'server_mac is HMAC-SHA-256 of section 10')
      }
    })
  }
})

t.test('all valid vectors written in one push frame to all their messages, in order', async t => {
  const { messages, error } = feed(newDecoder(), [Buffer.concat(valid.map(v => v.bytes))])
  t.equal(error, undefined, 'reports no error')
  t.equal(messages.length, valid.length, 'frames one message per vector')
  // Names rather than messages, so that a failure does not print 4096-entry messages.
  const wrong = valid.filter((v, i) => !isDeepStrictEqual(messages[i], v.vector.message)).map(v => v.name)
  t.strictSame(wrong, [], 'frames each vector\'s message at its place')
})

t.test('invalid vectors', async t => {
  for (const { name, vector } of invalid) {
    t.test(`${name}: ${vector.description}`, async t => {
      const bytes = hexOf(vector.hex)
      const maxFrameBytes = vector.phase === 'handshake' ? MAX_HANDSHAKE_FRAME_BYTES : MAX_FRAME_BYTES
      const expectMagic = vector.magic === true
      // Errors found in a whole body must also come from decodeBody alone (section 6, steps 3 to 5).
      const inBody = !expectMagic && ['SFM_ERR_MALFORMED', 'SFM_ERR_TRAILING_BYTES', 'SFM_ERR_BAD_PATH'].includes(vector.error)
      t.plan(inBody ? 7 : 6)

      const decoder = newDecoder(maxFrameBytes, expectMagic)
      const first = decoder.push(bytes)
      t.strictSame(first.messages.map(messageToJson), [], 'decodes no message')
      t.equal(first.error?.code, vector.error, `reports ${vector.error}`)
      const after = decoder.push(PING_FRAME)
      t.strictSame(after.messages.map(messageToJson), [], 'decodes nothing after the error, not even a valid PING')
      t.equal(after.error?.code, vector.error, 'keeps refusing input with the same error')

      const slow = feed(newDecoder(maxFrameBytes, expectMagic), oneByteAtATime(bytes))
      t.strictSame(slow.messages, [], 'decodes no message when fed one byte at a time')
      t.equal(slow.error?.code, vector.error, `reports ${vector.error} when fed one byte at a time`)

      if (inBody) t.throws(() => decodeBody(bytes[4]!, bytes.subarray(5)), { code: vector.error }, `decodeBody throws ${vector.error}`)
    })
  }
})

t.test('sessions', async t => {
  for (const { name, vector } of sessions) {
    t.test(`${name}: ${vector.description}`, async t => {
      for (const direction of ['c2s', 's2c']) {
        const frames: Json[] = vector.frames.filter((f: Json) => f.direction === direction)
        const decoder = newDecoder(MAX_HANDSHAKE_FRAME_BYTES, true)
        const messages: Json[] = []
        for (const frame of frames) {
          const bytes = hexOf(frame.hex)
          if (!frame.magic) t.equal(hexOfFrame(messageFromJson(frame.message)), bytes.toString('hex'), `encodes ${direction} ${frame.message.type}`)
          const result = decoder.push(bytes)
          t.equal(result.error, undefined, `${direction}: no error`)
          messages.push(...result.messages.map(messageToJson))
          // Without AUTH_REQUIRED the session is ready once the server has HELLO and the client WELCOME
          // (section 4); only then does the frame limit rise to MAX_FRAME_BYTES.
          if (result.messages.some(m => m.type === 'hello' || (m.type === 'welcome' && !m.authRequired))) {
            decoder.setMaxFrameBytes(MAX_FRAME_BYTES)
          }
        }
        t.strictSame(messages, frames.filter(f => !f.magic).map(f => f.message), `the ${direction} stream decodes to its messages in order`)
      }
    })
  }
})
