// Bytes on the wire (both directions, counted by a proxy on 127.0.0.1) for the changes of the dedup
// issue's table, on a 64 MiB file already mirrored. The figures are for 1 GiB; the ones that
// grow with the file are scaled here, the others are kept.
import { appendFileSync, copyFileSync, mkdirSync, openSync, closeSync, readFileSync, renameSync, utimesSync, writeFileSync, writeSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import t from 'tap'
import { mirrorDifference, startServer, syncOnce } from '../helpers/procs.js'
import { startProxy } from '../helpers/proxy.js'
import { testdir } from '../helpers/testdir.js'

const KiB = 1024
const MiB = 1024 * KiB

t.test('each change to a big mirrored file costs only what changed', async (t) => {
  const dir = testdir(t)
  const src = join(dir, 'src')
  const mirror = join(dir, 'mirror')
  mkdirSync(src)
  const file = join(src, 'big.bin')
  writeFileSync(file, randomBytes(64 * MiB))
  const server = await startServer(t, mirror)
  const proxy = await startProxy(t, server.port)
  const first = await syncOnce(t, src, proxy.port)
  t.equal(first.code, 0, first.output)
  t.ok(proxy.up >= 64 * MiB, 'the first sync sends the file')

  const rows: Array<[string, () => void, number]> = [
    ['touch only (mtime changes)', () => utimesSync(file, new Date(), new Date(Date.now() - 5_000)), 4 * KiB],
    ['overwrite 1 byte in the middle', () => patch(file, 32 * MiB, Buffer.from([0x42 ^ readFileSync(file)[32 * MiB]!])), 200 * KiB],
    ['insert 10 bytes at the start', () => writeFileSync(file, Buffer.concat([Buffer.from('0123456789'), readFileSync(file)])), 200 * KiB],
    ['append 16 MiB', () => appendFileSync(file, randomBytes(16 * MiB)), 16.5 * MiB],
    ['rename the file', () => renameSync(file, join(src, 'renamed.bin')), 8 * KiB],
    ['copy it to a new name', () => copyFileSync(join(src, 'renamed.bin'), join(src, 'copy.bin')), 8 * KiB],
  ]
  for (const [name, change, limit] of rows) {
    change()
    proxy.reset()
    const r = await syncOnce(t, src, proxy.port)
    t.equal(r.code, 0, `${name}: ${r.output}`)
    t.equal(mirrorDifference(src, mirror), null, `${name}: mirror is exact`)
    const total = proxy.up + proxy.down
    t.ok(total < limit, `${name}: ${total} bytes on the wire (limit ${limit})`)
  }
})

function patch(path: string, offset: number, bytes: Buffer): void {
  const fd = openSync(path, 'r+')
  writeSync(fd, bytes, 0, bytes.length, offset)
  closeSync(fd)
}
