// Watch mode must not let one slow reply hold up the changes after it: a change made while an earlier
// one waits for its reply (a long flush on a busy disk, say) is sent at once. The replies are held back
// here by a proxy between the client and sfmd; the rest is real.
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { join } from 'node:path'
import t from 'tap'
import { startClient, startServer, waitForMirror, waitUntil } from '../helpers/procs.js'
import { testdir } from '../helpers/testdir.js'

// A proxy that can hold back what the server sends until released.
async function startHoldingProxy(t: { teardown(fn: () => unknown): void }, targetPort: number) {
  let holding = false
  const held: Array<() => void> = []
  const open = new Set<net.Socket>()
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1')
    open.add(client).add(upstream)
    client.on('data', (d: Buffer) => upstream.write(d))
    upstream.on('data', (d: Buffer) => (holding ? held.push(() => client.write(d)) : client.write(d)))
    for (const s of [client, upstream]) {
      s.on('error', () => {})
      s.on('close', () => {
        client.destroy()
        upstream.destroy()
        open.delete(s)
      })
    }
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const release = () => {
    holding = false
    for (const send of held.splice(0)) send()
  }
  t.teardown(async () => {
    release()
    for (const s of open) s.destroy()
    await new Promise((resolve) => server.close(resolve))
  })
  return { port: (server.address() as net.AddressInfo).port, hold: () => (holding = true), release, held: () => held.length }
}

t.test('a change is sent while the reply to the one before is held up', async (t) => {
  const dir = testdir(t)
  const src = join(dir, 'src')
  const mirror = join(dir, 'mirror')
  mkdirSync(join(src, 'd'), { recursive: true })
  for (const name of ['a', 'b', 'c']) writeFileSync(join(src, 'd', name), name)
  const server = await startServer(t, mirror)
  const proxy = await startHoldingProxy(t, server.port)
  startClient(t, src, proxy.port)
  await waitForMirror(src, mirror)

  proxy.hold()
  rmSync(join(src, 'd/a'))
  await waitUntil(() => !existsSync(join(mirror, 'd/a')), 10_000, () => 'the first delete was not applied')
  t.ok(proxy.held() > 0, "the server's reply is held")
  rmSync(join(src, 'd/b'))
  await waitUntil(() => !existsSync(join(mirror, 'd/b')), 10_000, () => 'the second delete waited for the reply to the first')
  t.pass('the second change went ahead')
  proxy.release()
  rmSync(join(src, 'd/c'))
  await waitForMirror(src, mirror)
  t.pass('and everything is in order once the replies come')
})
