// A counting TCP proxy on 127.0.0.1, run as its own process (so that its CPU does not share the
// benchmark's event loop): `node proxy-main.js TARGET_PORT`. It prints "listening PORT" and answers IPC
// messages: {cmd:'stats'} -> {up, down, conns, open}, {cmd:'reset'} -> the counts before the reset.
// up = bytes client -> server, down = server -> client: payload bytes of TCP, the same for every tool.
import net from 'node:net'

const target = Number(process.argv[2])
let up = 0
let down = 0
let conns = 0
let open = 0

const server = net.createServer((client) => {
  conns++
  open++
  client.setNoDelay(true)
  const upstream = net.connect(target, '127.0.0.1')
  upstream.setNoDelay(true)
  client.on('data', (d: Buffer) => (up += d.length))
  upstream.on('data', (d: Buffer) => (down += d.length))
  client.pipe(upstream)
  upstream.pipe(client)
  // pipe() passes each side's end to the other (flushing what is buffered); an error ends both, and a
  // side left open 5 s after the other closed is cut.
  const kill = () => {
    client.destroy()
    upstream.destroy()
  }
  client.on('error', kill)
  upstream.on('error', kill)
  let closed = 0
  const onClose = () => {
    if (++closed === 2) open--
    else setTimeout(kill, 5000).unref()
  }
  client.on('close', onClose)
  upstream.on('close', onClose)
})

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`listening ${(server.address() as net.AddressInfo).port}\n`)
})

process.on('message', (m: { cmd: string; id: number }) => {
  const stats = { id: m.id, up, down, conns, open }
  if (m.cmd === 'reset') {
    up = 0
    down = 0
    conns = 0
  }
  process.send!(stats)
})
process.on('disconnect', () => process.exit(0))
