// A TCP proxy on 127.0.0.1 that keeps a copy of every byte crossing it, in each direction, so that a
// test can check what an eavesdropper on the network would see (a token, file contents, names).
import net from 'node:net'

export interface RecordingProxy {
  readonly port: number
  /** Everything client -> server, and server -> client, since the start or the last reset(). */
  up(): Buffer
  down(): Buffer
  /** Connections accepted since the start or the last reset(). */
  readonly connections: number
  /** Whether `needle` occurs anywhere in either direction (searched per direction, whole stream). */
  saw(needle: string | Buffer): boolean
  reset(): void
  close(): Promise<void>
}

export async function startRecordingProxy(
  t: { teardown(fn: () => unknown): void },
  targetPort: number,
  targetHost = '127.0.0.1',
): Promise<RecordingProxy> {
  let upParts: Buffer[] = []
  let downParts: Buffer[] = []
  let connections = 0
  const open = new Set<net.Socket>()
  const server = net.createServer((client) => {
    connections++
    const upstream = net.connect(targetPort, targetHost)
    open.add(client)
    open.add(upstream)
    client.on('data', (d: Buffer) => upParts.push(Buffer.from(d)))
    upstream.on('data', (d: Buffer) => downParts.push(Buffer.from(d)))
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
  const proxy: RecordingProxy = {
    port: (server.address() as net.AddressInfo).port,
    up: () => Buffer.concat(upParts),
    down: () => Buffer.concat(downParts),
    get connections() {
      return connections
    },
    saw(needle) {
      const n = typeof needle === 'string' ? Buffer.from(needle, 'utf8') : needle
      return proxy.up().includes(n) || proxy.down().includes(n)
    },
    reset() {
      upParts = []
      downParts = []
      connections = 0
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of open) s.destroy()
        open.clear()
        server.close(() => resolve())
      }),
  }
  t.teardown(() => proxy.close())
  return proxy
}
