// The journal of file manifests: records survive a round trip; a damaged or cut-off tail costs only the
// records in it; anything that is not a journal reads as empty.
import t from 'tap'
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { hash128 } from '../src/hash.js'
import { Journal, decodeRecords, encodeRecord, type JournalRecord } from '../src/server/store/journal.js'
import { testdir } from './helpers/testdir.js'

// The file header, as the journal itself writes it (not restated here, so a format bump needs no edit).
const MAGIC = await (async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sfm-journal-'))
  try {
    await new Journal(join(dir, 'j')).rewrite([])
    return readFileSync(join(dir, 'j'))
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})()

function record(seed: number, chunks: number): JournalRecord {
  const ids = Buffer.alloc(chunks * 16)
  const lengths = new Uint32Array(chunks)
  for (let i = 0; i < chunks; i++) {
    hash128(Buffer.from(`${seed}-${i}`)).copy(ids, i * 16)
    lengths[i] = 1000 + seed * 7 + i
  }
  const size = lengths.reduce((a, b) => a + b, 0)
  return {
    ino: BigInt(seed) * 1_000_003n,
    size,
    mtimeNs: 1_700_000_000_123_456_789n + BigInt(seed),
    ctimeNs: 1_700_000_001_987_654_321n + BigInt(seed),
    contentId: hash128(Buffer.from(`c${seed}`)), ids, lengths }
}

const samples: JournalRecord[] = [
  record(1, 1),
  record(2, 5),
  { ...record(3, 0), size: 0 }, // the empty file
  { ...record(4, 3), ino: 2n ** 64n - 1n, mtimeNs: -1_234_567_890n, ctimeNs: -1n }, // largest inode, times before 1970
  { ...record(5, 2), size: 2 ** 53 - 1 },
]

function journalBytes(records: JournalRecord[]): Buffer {
  return Buffer.concat([MAGIC, ...records.map(encodeRecord)])
}

t.test('records survive encode and decode', async (t) => {
  const data = journalBytes(samples)
  const { records, intactBytes } = decodeRecords(data)
  t.strictSame(records, samples)
  t.equal(intactBytes, data.length)
})

t.test('a record is its body length, the body and a 4-byte check; each chunk adds 20 bytes', async (t) => {
  const enc = encodeRecord(record(9, 2))
  const body = enc.readUInt32BE(0)
  t.equal(enc.length, 4 + body + 4)
  t.strictSame(enc.subarray(4 + body), hash128(enc.subarray(4, 4 + body)).subarray(0, 4))
  t.equal(encodeRecord(record(9, 3)).length - enc.length, 20)
  t.ok(MAGIC.length > 0 && MAGIC.toString('latin1').startsWith('SFMJ'), 'the journal starts with its magic')
})

t.test('a journal of only the magic holds no records', async (t) => {
  t.strictSame(decodeRecords(MAGIC), { records: [], intactBytes: MAGIC.length })
})

t.test('a tail cut off anywhere keeps every record before it', async (t) => {
  const whole = journalBytes(samples)
  const lastStart = journalBytes(samples.slice(0, -1)).length
  for (let cut = lastStart; cut < whole.length; cut++) {
    const { records, intactBytes } = decodeRecords(whole.subarray(0, cut))
    t.strictSame(records, samples.slice(0, -1), `cut at ${cut}`)
    t.equal(intactBytes, lastStart, `cut at ${cut}`)
  }
  // cut inside an earlier record: only those before it survive
  const secondStart = journalBytes(samples.slice(0, 1)).length
  const { records } = decodeRecords(whole.subarray(0, secondStart + 10))
  t.strictSame(records, samples.slice(0, 1))
})

t.test('a corrupted byte anywhere in a record drops it and everything after', async (t) => {
  const whole = journalBytes(samples)
  const secondStart = journalBytes(samples.slice(0, 1)).length
  const thirdStart = journalBytes(samples.slice(0, 2)).length
  for (let at = secondStart; at < thirdStart; at++) {
    const bad = Buffer.from(whole)
    bad[at] ^= 0x5a
    const { records, intactBytes } = decodeRecords(bad)
    t.strictSame(records, samples.slice(0, 1), `byte ${at} flipped`)
    t.equal(intactBytes, secondStart, `byte ${at} flipped`)
  }
})

t.test('a huge length in a damaged tail is not trusted', async (t) => {
  const good = journalBytes(samples.slice(0, 2))
  const tail = Buffer.alloc(8)
  tail.writeUInt32BE(0xffffffff, 0)
  t.strictSame(decodeRecords(Buffer.concat([good, tail])).records, samples.slice(0, 2))
  const small = Buffer.alloc(60)
  small.writeUInt32BE(3, 0) // shorter than any record
  t.strictSame(decodeRecords(Buffer.concat([good, small])).records, samples.slice(0, 2))
})

t.test('a record with a valid check but an unknown kind or a wrong chunk count ends the journal', async (t) => {
  const good = journalBytes(samples.slice(0, 1))
  const forge = (edit: (body: Buffer) => void): Buffer => {
    const enc = Buffer.from(encodeRecord(samples[1]!))
    const body = enc.subarray(4, enc.length - 4)
    edit(body)
    hash128(body).copy(enc, enc.length - 4, 0, 4)
    return enc
  }
  const unknownKind = forge((b) => (b[0] = 2))
  t.strictSame(decodeRecords(Buffer.concat([good, unknownKind])).records, samples.slice(0, 1))
  // the chunk count is the last fixed field, just before the ids and lengths of the record's 5 chunks
  const wrongCount = forge((b) => b.writeUInt32BE(4, b.length - 5 * 20 - 4))
  t.strictSame(decodeRecords(Buffer.concat([good, wrongCount])).records, samples.slice(0, 1))
})

t.test('a foreign file reads as empty', async (t) => {
  for (const data of [Buffer.alloc(0), Buffer.from('SFMJ'), Buffer.from('hello, world\n'), Buffer.from('SFMJ9999' + 'x'.repeat(100))]) {
    t.strictSame(decodeRecords(data), { records: [], intactBytes: 0 }, JSON.stringify(data.toString()))
  }
  const dir = testdir(t, { journal: 'not a journal at all, just text\n' })
  const j = new Journal(join(dir, 'journal'))
  t.strictSame(await j.load(), [])
  t.equal(j.size, 0)
})

t.test('a missing journal reads as empty', async (t) => {
  const j = new Journal(join(testdir(t), 'journal'))
  t.strictSame(await j.load(), [])
})

t.test('Journal: rewrite, append, close and load agree', async (t) => {
  const path = join(testdir(t), 'journal')
  const j = new Journal(path)
  await j.rewrite(samples.slice(0, 3))
  t.equal(j.size, 3)
  t.notOk(existsSync(`${path}.tmp`), 'the temporary file is renamed into place')
  j.append(samples[3]!)
  j.append(samples[4]!)
  t.equal(j.size, 5)
  await j.close()
  t.strictSame(readFileSync(path), journalBytes(samples))

  const again = new Journal(path)
  t.strictSame(await again.load(), samples)
  t.equal(again.size, 5)
  // rewriting compacts to exactly the given records
  await again.rewrite([samples[2]!])
  t.strictSame(await new Journal(path).load(), [samples[2]!])
  await again.remove()
  t.notOk(existsSync(path))
  await again.remove() // twice is fine
})

t.test('Journal: a damaged tail on disk keeps the intact prefix', async (t) => {
  const path = join(testdir(t), 'journal')
  const data = journalBytes(samples)
  writeFileSync(path, Buffer.concat([data.subarray(0, data.length - 3)]))
  t.strictSame(await new Journal(path).load(), samples.slice(0, -1))
  const garbage = Buffer.concat([data, Buffer.from('garbage after the last record')])
  writeFileSync(path, garbage)
  t.strictSame(await new Journal(path).load(), samples)
})

t.test('Journal: a large rewrite (more than one write batch) reads back whole', async (t) => {
  const path = join(testdir(t), 'journal')
  const many = Array.from({ length: 400 }, (_, i) => record(i, 200)) // ~ 1.6 MB
  const j = new Journal(path)
  await j.rewrite(many)
  t.strictSame(await new Journal(path).load(), many)
})

t.test('a journal that cannot be read is an error, not an empty journal', async (t) => {
  const dir = testdir(t, { journal: {} }) // a directory where the file should be
  await t.rejects(new Journal(join(dir, 'journal')).load(), { code: 'EISDIR' })
})
