// What arrives on sfmd's port besides its client: hundreds of idle connections, garbage, a 4 GiB
// length, a sender of one byte a second. The real client must not notice, and the server must stay
// small and close what does not finish its handshake.
import net from 'node:net'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { MAGIC } from '../../src/protocol/constants.js'
import { mirrorDifference, sleep, startServer, syncOnce } from '../helpers/procs.js'
import { testdir } from '../helpers/testdir.js'

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => resolve(s))
    s.on('error', () => {}) // the server may close these at any time: that is the point
    s.resume() // read (and drop) what comes, so a close by the server is seen
    s.once('error', reject)
  })
}

t.test('idle, garbage and slow connections cost the real client nothing and the server little', async (t) => {
  const dir = testdir(t)
  const src = join(dir, 'src')
  mkdirSync(src)
  for (let i = 0; i < 200; i++) writeFileSync(join(src, `f${i}`), `file ${i}`)
  const server = await startServer(t, join(dir, 'mirror'))
  const baseline = server.peakRss()

  const sockets: net.Socket[] = []
  t.teardown(() => sockets.forEach((s) => s.destroy()))
  // 300 connections that never say anything (more than the server keeps in their handshake)
  for (let i = 0; i < 300; i++) sockets.push(await connect(server.port))
  // garbage, and a frame that claims 4 GiB
  const garbage = await connect(server.port)
  garbage.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'))
  const huge = await connect(server.port)
  huge.write(Buffer.concat([MAGIC, Buffer.from([0xff, 0xff, 0xff, 0xff, 0x01])]))
  sockets.push(garbage, huge)
  // one byte a second: MAGIC, then a HELLO that never ends
  const slow = await connect(server.port)
  sockets.push(slow)
  const slowBytes = Buffer.concat([MAGIC, Buffer.from([0, 0, 0, 0x2d, 0x01])])
  let k = 0
  const drip = setInterval(() => {
    if (k < slowBytes.length && !slow.destroyed) slow.write(slowBytes.subarray(k, ++k))
  }, 1000)
  t.teardown(() => clearInterval(drip))

  // the real client syncs as usual, while all of that is connected
  const started = Date.now()
  const r = await syncOnce(t, src, server.port, [], 30_000)
  t.equal(r.code, 0, r.output)
  t.ok(Date.now() - started < 10_000, `synced in ${Date.now() - started} ms`)
  t.equal(mirrorDifference(src, join(dir, 'mirror')), null)

  const grew = server.peakRss() - baseline
  t.ok(grew < 64 << 20, `server memory grew by ${Math.round(grew / 1024)} KiB`)
  t.match(server.output(), /FRAME_TOO_LARGE|frame length/, 'the 4 GiB length was refused')

  // the handshake deadline (10 s) closes all of them
  await sleep(11_500)
  const open = sockets.filter((s) => !s.destroyed && s.readyState === 'open').length
  t.equal(open, 0, 'every connection that did not finish its handshake was closed')
})
