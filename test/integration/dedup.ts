// Dedup across time: moves and copies whose delete and create arrive in separate watcher batches
// seconds apart, a restarted server, and an index rebuilt from scratch.
import { randomBytes } from 'node:crypto'
import { copyFileSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { digestBuffer } from '../../src/digest.js'
import { Connection } from '../../src/client/connection.js'
import { silentLogger } from '../../src/log.js'
import { treeIds } from '../../src/client/uploader.js'
import { sleep, startClient, startServer, syncOnce, waitForMirror } from '../helpers/procs.js'
import { startProxy } from '../helpers/proxy.js'
import { testdir } from '../helpers/testdir.js'

const MiB = 1 << 20

t.test('a file moved out and back in under a new name seconds later costs no data', async (t) => {
  const dir = testdir(t)
  const src = join(dir, 'src')
  const mirror = join(dir, 'mirror')
  mkdirSync(src)
  writeFileSync(join(src, 'a.bin'), randomBytes(8 * MiB))
  const server = await startServer(t, mirror)
  const proxy = await startProxy(t, server.port)
  const client = startClient(t, src, proxy.port, ['--verbose'])
  await waitForMirror(src, mirror)
  proxy.reset()
  renameSync(join(src, 'a.bin'), join(dir, 'parked.bin')) // out of the tree: the watcher sees a delete
  await waitForMirror(src, mirror)
  await sleep(2_000)
  renameSync(join(dir, 'parked.bin'), join(src, 'b.bin')) // back in, same inode, new name
  await waitForMirror(src, mirror)
  await client.waitForOutput(/rename b\.bin/)
  t.ok(proxy.up + proxy.down < 64 * 1024, `${proxy.up + proxy.down} bytes on the wire`)
})

t.test('a copy made seconds after its original was deleted costs no data', async (t) => {
  const dir = testdir(t)
  const src = join(dir, 'src')
  const mirror = join(dir, 'mirror')
  mkdirSync(src)
  const data = randomBytes(8 * MiB)
  writeFileSync(join(src, 'a.bin'), data)
  const server = await startServer(t, mirror)
  const proxy = await startProxy(t, server.port)
  startClient(t, src, proxy.port)
  await waitForMirror(src, mirror)
  proxy.reset()
  rmSync(join(src, 'a.bin'))
  await waitForMirror(src, mirror)
  await sleep(2_000)
  writeFileSync(join(src, 'b.bin'), data) // new inode, same bytes: found in the server's trash
  await waitForMirror(src, mirror)
  t.ok(proxy.up + proxy.down < 64 * 1024, `${proxy.up + proxy.down} bytes on the wire`)
})

t.test('a copy and the delete of its original in separate batches cost no data', async (t) => {
  const dir = testdir(t)
  const src = join(dir, 'src')
  const mirror = join(dir, 'mirror')
  mkdirSync(join(src, 'sub'), { recursive: true })
  writeFileSync(join(src, 'sub/a.bin'), randomBytes(8 * MiB))
  const server = await startServer(t, mirror)
  const proxy = await startProxy(t, server.port)
  startClient(t, src, proxy.port)
  await waitForMirror(src, mirror)
  proxy.reset()
  copyFileSync(join(src, 'sub/a.bin'), join(src, 'b.bin'))
  await waitForMirror(src, mirror)
  await sleep(500)
  rmSync(join(src, 'sub'), { recursive: true })
  await waitForMirror(src, mirror)
  t.ok(proxy.up + proxy.down < 64 * 1024, `${proxy.up + proxy.down} bytes on the wire`)
})

t.test('a restarted server still dedups, with its journal or without it', async (t) => {
  const dir = testdir(t)
  const src = join(dir, 'src')
  const mirror = join(dir, 'mirror')
  mkdirSync(src)
  const data = randomBytes(16 * MiB)
  writeFileSync(join(src, 'a.bin'), data)
  let server = await startServer(t, mirror)
  t.equal((await syncOnce(t, src, server.port)).code, 0)

  for (const journal of ['kept', 'removed']) {
    server.kill('SIGTERM')
    t.equal(await server.exited, 0)
    if (journal === 'removed') rmSync(join(mirror, '.sfm/journal'))
    server = await startServer(t, mirror)
    const proxy = await startProxy(t, server.port)
    writeFileSync(join(src, `copy-${journal}.bin`), data)
    const r = await syncOnce(t, src, proxy.port)
    t.equal(r.code, 0, r.output)
    t.ok(proxy.up + proxy.down < 64 * 1024, `journal ${journal}: ${proxy.up + proxy.down} bytes on the wire`)
  }
})

t.test('an index rebuilt from scratch answers HAVE? exactly as the journal did', async (t) => {
  const dir = testdir(t)
  const src = join(dir, 'src')
  const mirror = join(dir, 'mirror')
  mkdirSync(src)
  const files = [randomBytes(3 * MiB), randomBytes(200_000), Buffer.from('small'), Buffer.alloc(0)]
  files.forEach((f, i) => writeFileSync(join(src, `f${i}`), f))
  let server = await startServer(t, mirror)
  t.equal((await syncOnce(t, src, server.port)).code, 0)
  // every id of every file, plus ids the server cannot have
  const ids = files.flatMap((f) => {
    const all = treeIds(digestBuffer(f).tree)
    return Array.from({ length: all.length / 16 }, (_, i) => Buffer.from(all.subarray(i * 16, i * 16 + 16)))
  })
  ids.push(randomBytes(16), randomBytes(16))

  const ask = async (port: number) => {
    const conn = await Connection.open({
      host: '127.0.0.1',
      port,
      identity: { clientId: randomBytes(16), clientName: 'test', token: null },
      log: silentLogger,
    })
    try {
      return await conn.have(ids)
    } finally {
      conn.close()
    }
  }
  const withJournal = await ask(server.port)
  server.kill('SIGTERM')
  await server.exited
  rmSync(join(mirror, '.sfm/journal'))
  server = await startServer(t, mirror)
  const rebuilt = await ask(server.port)
  t.same(rebuilt, withJournal)
  t.equal(withJournal.filter(Boolean).length, ids.length - 2, 'every id of the mirrored files is known, the random ones are not')
})
