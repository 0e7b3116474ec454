import t from 'tap'
import { spawnSync } from 'node:child_process'
import { appendFileSync, lstatSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { CDC_MAX_BYTES, CDC_MIN_BYTES } from '../src/chunker.js'
import { digestBuffer, digestFile, sameIdentity, type Digest } from '../src/digest.js'
import { EMPTY_CONTENT_ID, HASH_BYTES, hash128, hashFromKey, hashKey, toHex } from '../src/hash.js'
import { ContentTree } from '../src/tree.js'
import { testdir } from './helpers/testdir.js'

// Pseudo-random bytes: the `xxh128-counter` generator of spec/README-chunker.md.
function counterBytes(length: number): Buffer {
  const out = Buffer.alloc(Math.ceil(length / 16) * 16)
  const counter = Buffer.alloc(8)
  for (let k = 0; 16 * k < length; k++) {
    counter.writeBigUInt64BE(BigInt(k))
    hash128(counter).copy(out, 16 * k)
  }
  return out.subarray(0, length)
}

function plain(d: Digest) {
  return {
    size: d.size,
    ids: toHex(d.ids),
    lengths: [...d.lengths],
    offsets: [...d.offsets],
    contentId: toHex(d.contentId),
    levels: d.tree.levels.map((l) => l.count),
  }
}

const random = counterBytes(3 << 20)

t.test('hash128 is XXH3-128 with the known values of PROTOCOL.md 5.1', async (t) => {
  t.equal(HASH_BYTES, 16)
  t.equal(toHex(hash128(Buffer.alloc(0))), '99aa06d3014798d86001c324468d497f')
  t.equal(toHex(hash128(Buffer.from('abc'))), '06b05ab6733a618578af5f94892f3950')
  t.equal(toHex(hash128(new TextEncoder().encode('abc'))), '06b05ab6733a618578af5f94892f3950', 'a plain Uint8Array')
  t.equal(toHex(hash128(Buffer.from('xabcx').subarray(1, 4))), '06b05ab6733a618578af5f94892f3950', 'a view')
  t.equal(toHex(EMPTY_CONTENT_ID), '99aa06d3014798d86001c324468d497f')
})

t.test('hashKey gives a 16-character key that converts back to the same bytes', async (t) => {
  const ids = [hash128(Buffer.from('abc')), Buffer.alloc(16, 0xff), Buffer.alloc(16, 0)]
  for (const id of ids) {
    const key = hashKey(id)
    t.equal(key.length, 16)
    t.ok(hashFromKey(key).equals(id))
    t.equal(hashKey(new Uint8Array(id)), key, 'the same key from a plain Uint8Array')
  }
  t.not(hashKey(ids[1]!), hashKey(ids[2]!))
  t.equal(toHex(new Uint8Array([0, 1, 0xab])), '0001ab')
})

t.test('digestBuffer gives the content id of section 15 for hello.txt', async (t) => {
  const d = digestBuffer(Buffer.from('hello, sfm\n'))
  t.equal(toHex(d.contentId), '9486b8b4a56e974f7ebc1ef97962df26')
  t.same([...d.lengths], [11])
  t.ok(d.ids.equals(d.contentId), 'one chunk: the chunk id is the content id')
})

t.test('digestBuffer of nothing is the empty file', async (t) => {
  const d = digestBuffer(Buffer.alloc(0))
  t.equal(d.size, 0)
  t.equal(d.ids.length, 0)
  t.equal(d.lengths.length, 0)
  t.ok(d.contentId.equals(EMPTY_CONTENT_ID))
})

t.test('digestBuffer hashes every chunk and builds the tree over them', async (t) => {
  const d = digestBuffer(random)
  t.equal(d.size, random.length)
  t.equal(d.ids.length, d.lengths.length * HASH_BYTES)
  for (let i = 0; i < d.lengths.length; i++) {
    const chunk = random.subarray(d.offsets[i]!, d.offsets[i]! + d.lengths[i]!)
    if (!hash128(chunk).equals(d.ids.subarray(i * 16, i * 16 + 16))) t.fail(`chunk ${i}`)
  }
  t.ok(d.contentId.equals(ContentTree.fromLeaves(Buffer.from(d.ids), d.lengths).contentId))
  t.ok(d.ids === d.tree.levels[0]!.ids, 'the ids are the tree\'s leaves, not a copy')
})

t.test('digestFile equals digestBuffer on real files, for any block size', async (t) => {
  const sizes = [0, 1, 1_000, CDC_MIN_BYTES, CDC_MIN_BYTES + 1, CDC_MAX_BYTES + 3, 1_234_567, random.length]
  const dir = testdir(t, Object.fromEntries(sizes.map((n) => [`f${n}`, random.subarray(0, n)])))
  for (const n of sizes) {
    const path = join(dir, `f${n}`)
    const expected = plain(digestBuffer(random.subarray(0, n)))
    t.same(plain(await digestFile(path)), expected, `${n} bytes, default blocks`)
    t.same(plain(await digestFile(path, { blockBytes: 65_536 })), expected, `${n} bytes, 64 KiB blocks`)
    t.same(plain(await digestFile(path, { blockBytes: 777_777 })), expected, `${n} bytes, 777,777-byte blocks`)
  }
  const small = join(dir, 'f1000')
  t.same(plain(await digestFile(small, { blockBytes: 1 })), plain(digestBuffer(random.subarray(0, 1_000))), '1-byte reads')
  // blocks big enough to be cut on the thread pool (where the addon is built), many of them, with
  // the chunks of one block hashed while the next is cut
  const big = counterBytes(11 << 20)
  const bigPath = join(dir, 'big')
  writeFileSync(bigPath, big)
  for (const blockBytes of [1 << 20, (3 << 20) / 2 + 7, 4 << 20]) {
    t.same(plain(await digestFile(bigPath, { blockBytes })), plain(digestBuffer(big)), `11 MiB in blocks of ${blockBytes} bytes`)
  }
})

t.test('digestFile records the file before and after reading it', async (t) => {
  const dir = testdir(t, { a: random.subarray(0, 100_000) })
  const path = join(dir, 'a')
  const d = await digestFile(path)
  const st = lstatSync(path, { bigint: true })
  t.same(d.statBefore, { size: 100_000, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, ino: st.ino })
  t.ok(sameIdentity(d.statBefore, d.statAfter), 'unchanged while read')
  appendFileSync(path, 'more')
  const again = await digestFile(path)
  t.equal(again.statBefore.size, 100_004)
  t.notOk(sameIdentity(d.statAfter, again.statBefore), 'an append shows')
  t.notOk(sameIdentity(d.statAfter, { ...d.statAfter, ino: d.statAfter.ino + 1n }), 'another inode shows')
})

t.test('digestFile refuses a symlink, even to a regular file', async (t) => {
  const dir = testdir(t, { target: 'hello' })
  symlinkSync('target', join(dir, 'link'))
  await t.rejects(digestFile(join(dir, 'link')), { code: 'ELOOP' })
  t.equal((await digestFile(join(dir, 'target'))).size, 5, 'the target itself is fine')
})

t.test('digestFile refuses what is not a regular file', async (t) => {
  const dir = testdir(t, { sub: {} })
  await t.rejects(digestFile(join(dir, 'sub')), { code: 'EISDIR' })
  await t.rejects(digestFile(join(dir, 'missing')), { code: 'ENOENT' })
  await t.rejects(digestFile(join(dir, 'sub'), { blockBytes: 0 }), RangeError)
  // A FIFO must be refused at once, not wait for a writer.
  const fifo = join(dir, 'fifo')
  if (spawnSync('mkfifo', [fifo]).status === 0) await t.rejects(digestFile(fifo), { code: 'EINVAL' })
  else t.comment('no mkfifo here: the FIFO case did not run')
})

// /proc/self/mem says it is a regular file, and reading its offset 0 (never mapped) fails with EIO.
t.test('digestFile reports a read error', { skip: process.platform !== 'linux' && 'Linux only' }, async (t) => {
  await t.rejects(digestFile('/proc/self/mem'), { code: 'EIO' })
})
