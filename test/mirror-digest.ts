// The mirror digest (PROTOCOL.md 5.5) against the hand-written vectors of spec/digest/, and the
// properties a client relies on when it skips the listing: any compared field changes it, order does not.
import t from 'tap'
import { basename } from 'node:path'
import { hash128 } from '../src/hash.js'
import { MirrorDigest, type DigestEntry } from '../src/protocol/mirror-digest.js'
import { hexOf, listVectors, readVector, type Json } from './helpers/vectors.js'

function entryOf(e: Json): DigestEntry {
  const base = { path: e.path as string, mtimeNs: BigInt(e.mtimeNs) }
  if (e.kind === 'file') return { kind: 'file', ...base, mode: e.mode, size: e.size }
  if (e.kind === 'dir') return { kind: 'dir', ...base, mode: e.mode }
  return { kind: 'symlink', ...base, target: e.target }
}

function digestOf(entries: readonly DigestEntry[]): string {
  const d = new MirrorDigest()
  for (const e of entries) d.add(e)
  return d.value().toString('hex')
}

for (const file of listVectors('spec/digest')) {
  t.test(`spec/digest/${basename(file)}`, async (t) => {
    const v = readVector(file)
    const entries = (v.entries as Json[]).map(entryOf)
    const summaries = Buffer.concat((v.summaries as string[][]).map((s) => hexOf(s)))
    t.equal(hash128(summaries).toString('hex'), v.digest, 'the vector: its digest is the hash of its summaries')
    t.equal(digestOf(entries), v.digest, 'MirrorDigest gives the digest from the entries in the given order')
    t.equal(digestOf([...entries].reverse()), v.digest, 'and in the reverse order')
  })
}

t.test('every field a pass compares changes the digest', async (t) => {
  const base: DigestEntry[] = [
    { kind: 'dir', path: 'src', mode: 0o755, mtimeNs: 1_000_000_000n },
    { kind: 'file', path: 'src/a.txt', mode: 0o644, mtimeNs: 2_000_000_000n, size: 10 },
    { kind: 'symlink', path: 'src/link', mtimeNs: 3_000_000_000n, target: 'a.txt' },
  ]
  const before = digestOf(base)
  const variants: Array<[string, DigestEntry[]]> = [
    ['a file one nanosecond newer', [base[0]!, { ...base[1]!, mtimeNs: 2_000_000_001n } as DigestEntry, base[2]!]],
    ['a file one byte longer', [base[0]!, { ...base[1]!, size: 11 } as DigestEntry, base[2]!]],
    ['a file with another mode', [base[0]!, { ...base[1]!, mode: 0o755 } as DigestEntry, base[2]!]],
    ['a directory with another mtime', [{ ...base[0]!, mtimeNs: 1n } as DigestEntry, base[1]!, base[2]!]],
    ['a symlink with another target', [base[0]!, base[1]!, { ...base[2]!, target: 'b.txt' } as DigestEntry]],
    ['a renamed file', [base[0]!, { ...base[1]!, path: 'src/b.txt' } as DigestEntry, base[2]!]],
    ['a file in place of the symlink', [base[0]!, base[1]!, { kind: 'file', path: 'src/link', mode: 0, mtimeNs: 3_000_000_000n, size: 5 }]],
    ['an entry fewer', base.slice(0, 2)],
    ['an entry more', [...base, { kind: 'dir', path: 'src/new', mode: 0o755, mtimeNs: 1n }]],
  ]
  for (const [what, entries] of variants) t.not(digestOf(entries), before, what)
  t.equal(digestOf([...base].reverse()), before, 'the same entries in another order give the same digest')
})

t.test('a path can be as long as the protocol allows', async (t) => {
  const long = `${'d'.repeat(250)}/`.repeat(15) + 'x'.repeat(4095 - 251 * 15)
  t.equal(Buffer.byteLength(long), 4095)
  const target = 'é'.repeat(2047)
  const d = digestOf([{ kind: 'symlink', path: long, mtimeNs: 0n, target }])
  const summary = Buffer.concat([Buffer.from([3, 0x0f, 0xff]), Buffer.from(long), Buffer.alloc(2 + 8), Buffer.from([0x0f, 0xfe]), Buffer.from(target)])
  t.equal(d, hash128(summary).toString('hex'), 'the summary holds the whole path and target')
})
