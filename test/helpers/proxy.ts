// A TCP proxy on 127.0.0.1 between a client and sfmd: it counts the bytes crossing it in each
// direction, can keep a copy of them (to check what an eavesdropper would see: a token, file contents,
// names), and can cut every connection on demand (for fault tests).
import net from 'node:net'

export interface Proxy {
  readonly port: number
  /** Bytes client -> server and server -> client since the start or the last reset. */
  readonly up: number
  readonly down: number
  /** Connections accepted since the start or the last reset. */
  readonly connections: number
  /** With `record`: the bytes themselves, in each direction. */
  recorded(): { up: Buffer; down: Buffer }
  /** With `record`: whether `needle` occurs in either direction. */
  saw(needle: string | Buffer): boolean
  reset(): void
  /** Destroys every open connection (both sides). */
  cutAll(): void
  close(): Promise<void>
}

export async function startProxy(
  t: { teardown(fn: () => unknown): void },
  targetPort: number,
  opts: { record?: boolean } = {},
): Promise<Proxy> {
  let up = 0
  let down = 0
  let connections = 0
  let upParts: Buffer[] = []
  let downParts: Buffer[] = []
  const open = new Set<net.Socket>()
  const server = net.createServer((client) => {
    connections++
    const upstream = net.connect(targetPort, '127.0.0.1')
    open.add(client)
    open.add(upstream)
    client.on('data', (d: Buffer) => {
      up += d.length
      if (opts.record) upParts.push(Buffer.from(d))
    })
    upstream.on('data', (d: Buffer) => {
      down += d.length
      if (opts.record) downParts.push(Buffer.from(d))
    })
    client.pipe(upstream)
    upstream.pipe(client)
    const end = () => {
      client.destroy()
      upstream.destroy()
      open.delete(client)
      open.delete(upstream)
    }
    client.on('error', end)
    upstream.on('error', end)
    client.on('close', end)
    upstream.on('close', end)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const proxy: Proxy = {
    port: (server.address() as net.AddressInfo).port,
    get up() {
      return up
    },
    get down() {
      return down
    },
    get connections() {
      return connections
    },
    recorded: () => ({ up: Buffer.concat(upParts), down: Buffer.concat(downParts) }),
    saw(needle) {
      const n = typeof needle === 'string' ? Buffer.from(needle, 'utf8') : needle
      const r = proxy.recorded()
      return r.up.includes(n) || r.down.includes(n)
    },
    reset() {
      up = 0
      down = 0
      connections = 0
      upParts = []
      downParts = []
    },
    cutAll() {
      for (const s of open) s.destroy()
      open.clear()
    },
    close: () =>
      new Promise<void>((resolve) => {
        proxy.cutAll()
        server.close(() => resolve())
      }),
  }
  t.teardown(() => proxy.close())
  return proxy
}
