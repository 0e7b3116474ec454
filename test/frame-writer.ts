// FrameWriter gathers the frames of one event-loop turn into few socket writes, copying small parts
// into shared blocks. Checked over a real loopback socket: what arrives decodes to exactly what was
// sent, in order, across block boundaries and parts passed through uncopied, and a frame sent just
// before the socket is ended is not lost.
import { randomBytes } from 'node:crypto'
import net from 'node:net'
import { isDeepStrictEqual } from 'node:util'
import t, { type Test } from 'tap'
import { FrameWriter } from '../src/protocol/frame-writer.js'
import { FrameDecoder } from '../src/protocol/framer.js'
import { MAX_FRAME_BYTES } from '../src/protocol/constants.js'
import type { Message } from '../src/protocol/messages.js'

// Sends `turns` (one array of messages per event-loop turn, calling afterSend after each), then ends
// the socket right after the last send; resolves with what the other end decoded.
async function roundTrip(t: Test, turns: Message[][], afterSend: (writer: FrameWriter, socket: net.Socket) => void = () => {}): Promise<{ messages: Message[]; error?: string }> {
  const received = new Promise<{ messages: Message[]; error?: string }>((resolve) => {
    const server = net.createServer((socket) => {
      const decoder = new FrameDecoder({ maxFrameBytes: MAX_FRAME_BYTES, expectMagic: false })
      const messages: Message[] = []
      let error: string | undefined
      socket.on('data', (d) => {
        const r = decoder.push(d)
        messages.push(...r.messages)
        error ??= r.error?.code
      })
      socket.on('end', () => {
        server.close()
        resolve({ messages, error })
      })
    })
    server.listen(0, '127.0.0.1', async () => {
      const { port } = server.address() as net.AddressInfo
      const socket = net.connect({ host: '127.0.0.1', port })
      t.teardown(() => socket.destroy())
      await new Promise((r) => socket.once('connect', r))
      const writer = new FrameWriter(socket)
      for (const [i, turn] of turns.entries()) {
        for (const msg of turn) writer.send(msg)
        afterSend(writer, socket)
        if (i < turns.length - 1) await new Promise((r) => setImmediate(r))
      }
      writer.flush()
      socket.end()
    })
  })
  return received
}

const chunk = (uploadId: number, bytes: number): Message => ({ type: 'chunk', uploadId, hash: randomBytes(16), data: randomBytes(bytes) })

t.test('frames arrive whole and in order: small ones copied across blocks, large ones passed through', async (t) => {
  const first: Message[] = [{ type: 'ping' }]
  // 400 small chunks (about 400 KiB) fill more than one 256 KiB block; large ones sit between them.
  for (let i = 0; i < 400; i++) first.push(chunk(i, 1 + (i * 37) % 2_000))
  first.splice(100, 0, chunk(1_000, 100_000))
  first.splice(300, 0, chunk(1_001, 40_000), chunk(1_002, 33_000))
  const second: Message[] = [chunk(2_000, 10), { type: 'ok', requestId: 7 }]
  const last: Message[] = [{ type: 'error', requestId: 0, code: 3, message: 'the last frame before the end' }]
  const sent = [...first, ...second, ...last]
  const { messages, error } = await roundTrip(t, [first, second, last])
  t.equal(error, undefined, 'no frame was malformed')
  t.equal(messages.length, sent.length, 'as many frames as were sent, the last one included')
  const firstDifferent = sent.findIndex((m, i) => !isDeepStrictEqual({ ...messages[i] }, { ...m }))
  t.equal(firstDifferent, -1, 'every frame the same as sent, in order')
})

t.test('a small part is copied when sent: the caller may reuse its buffer at once', async (t) => {
  const data = Buffer.alloc(1_000, 0x41)
  const msg: Message = { type: 'chunk', uploadId: 1, hash: Buffer.alloc(16, 1), data }
  const { messages } = await roundTrip(t, [[msg]], () => data.fill(0x42))
  t.equal(messages.length, 1)
  t.same((messages[0] as { data: Buffer }).data, Buffer.alloc(1_000, 0x41), 'the bytes as they were when sent')
})

t.test('full blocks are reused once the socket has written them; afterWritten comes after all sent before it', async (t) => {
  // about 9 MiB of small chunks over 30 turns: many 256 KiB blocks, written while more are filled
  const turns: Message[][] = []
  for (let k = 0; k < 30; k++) turns.push(Array.from({ length: 200 }, (_, i) => chunk(k * 1_000 + i, 1_000 + ((i * 97) % 1_000))))
  const fired: Array<{ turn: number; written: number }> = []
  const sentBytes: number[] = []
  let total = 0
  let turn = 0
  const { messages, error } = await roundTrip(t, turns, (writer, socket) => {
    const k = turn++
    for (const m of turns[k]!) total += 4 + 1 + 4 + 16 + (m as { data: Buffer }).data.length
    sentBytes.push(total)
    writer.afterWritten(() => fired.push({ turn: k, written: socket.bytesWritten }))
  })
  t.equal(error, undefined)
  const sent = turns.flat()
  t.equal(messages.length, sent.length)
  t.equal(sent.findIndex((m, i) => !isDeepStrictEqual({ ...messages[i] }, { ...m })), -1, 'every frame the same as sent: no block was reused too early')
  t.same(fired.map((f) => f.turn), turns.map((_, k) => k), 'every callback, in order')
  t.equal(fired.findIndex((f) => f.written < sentBytes[f.turn]!), -1, 'each after the bytes sent before it were written')
})
