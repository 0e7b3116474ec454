// A TCP proxy on 127.0.0.1 that counts the bytes crossing it in each direction, and can cut every
// connection on demand (for fault tests).
import net from 'node:net'

export interface Proxy {
  readonly port: number
  /** Bytes client -> server and server -> client since the last reset. */
  readonly up: number
  readonly down: number
  reset(): void
  /** Destroys every open connection (both sides). */
  cutAll(): void
  close(): Promise<void>
}

export async function startProxy(t: { teardown(fn: () => unknown): void }, targetPort: number): Promise<Proxy> {
  let up = 0
  let down = 0
  const open = new Set<net.Socket>()
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1')
    open.add(client)
    open.add(upstream)
    client.on('data', (d) => (up += d.length))
    upstream.on('data', (d) => (down += d.length))
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
    reset() {
      up = 0
      down = 0
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
