// The content index: every chunk id and node id of every file maps to where those bytes are.
import t from 'tap'
import { hash128 } from '../src/hash.js'
import { ContentTree } from '../src/tree.js'
import { Catalog, chunkOffsets, type FileNode } from '../src/server/store/catalog.js'
import { ContentIndex, PLACES_PER_ID, type Location } from '../src/server/store/content-index.js'

function leafId(n: number): Buffer {
  const b = Buffer.alloc(8)
  b.writeBigUInt64BE(BigInt(n))
  return hash128(b)
}

/** A file node (no bytes on disk: the index never reads) whose chunks are the given leaves. */
function fileOf(catalog: Catalog, name: string, leaves: Array<{ id: Buffer; length: number }>): FileNode {
  const ids = Buffer.concat(leaves.map((l) => l.id))
  const lengths = Uint32Array.from(leaves.map((l) => l.length))
  const tree = ContentTree.fromLeaves(ids, lengths)
  const file: FileNode = {
    kind: 'file',
    name,
    parent: null,
    mode: 0o644,
    mtimeNs: 1n,
    size: tree.size,
    contentId: tree.contentId,
    manifest: { ids, lengths },
    ino: 1n,
    ctimeNs: 1n,
  }
  catalog.attach(catalog.top, name, file)
  return file
}

function leaves(from: number, count: number): Array<{ id: Buffer; length: number }> {
  return Array.from({ length: count }, (_, i) => ({ id: leafId(from + i), length: 1000 + ((from + i) % 97) }))
}

// Where each location is, in bytes of its file: what a copy reads.
const at = (locs: Location[]) =>
  locs.map((l) => {
    const offsets = chunkOffsets(l.file)
    return { file: l.file.name, offset: offsets[l.first]!, length: offsets[l.last]! - offsets[l.first]! }
  })

t.test('every node of a multi-chunk file is found at its offset and length', async (t) => {
  const catalog = new Catalog()
  const index = new ContentIndex()
  const parts = leaves(0, 1500)
  const file = fileOf(catalog, 'big', parts)
  index.addFile(file)
  const tree = ContentTree.fromLeaves(file.manifest.ids, file.manifest.lengths)
  t.ok(tree.levels.length >= 3, `a tree of ${tree.levels.length} levels`)

  // leaves, against offsets summed here
  let offset = 0
  parts.forEach((p, i) => {
    t.strictSame(at(index.lookup(p.id)), [{ file: 'big', offset, length: p.length }], `leaf ${i}`)
    offset += p.length
  })
  // every node above, at the offset and length the tree gives it
  let nodes = 0
  for (let level = 1; level < tree.levels.length; level++) {
    const lv = tree.levels[level]!
    for (let i = 0; i < lv.count; i++) {
      const locs = at(index.lookup(tree.entryId(level, i)))
      t.strictSame(locs, [{ file: 'big', offset: lv.offsets[i]!, length: lv.lengths[i]! }], `level ${level} entry ${i}`)
      // a node covers exactly its children
      const first = lv.childStart[i]!
      const below = tree.levels[level - 1]!
      let sum = 0
      for (let c = first; c < first + lv.childCount[i]!; c++) sum += below.lengths[c]!
      if (sum !== lv.lengths[i] || below.offsets[first] !== lv.offsets[i]) t.fail(`level ${level} entry ${i} does not cover its children`)
      if (lv.childCount[i]! > 1) nodes++
    }
  }
  t.strictSame(at(index.lookup(file.contentId)), [{ file: 'big', offset: 0, length: file.size }], 'the root')
  t.equal(index.size, parts.length + nodes, 'one key per distinct id')
  t.ok(index.has(file.contentId))
  t.notOk(index.has(leafId(99_999)))
  t.strictSame(index.lookup(leafId(99_999)), [])
})

t.test('a single-chunk file is found by its chunk id, which is its content id', async (t) => {
  const catalog = new Catalog()
  const index = new ContentIndex()
  const file = fileOf(catalog, 'one', leaves(7, 1))
  index.addFile(file)
  t.strictSame(file.contentId, leafId(7))
  t.strictSame(at(index.lookup(leafId(7))), [{ file: 'one', offset: 0, length: file.size }])
  t.equal(index.size, 1)
})

t.test('the empty file adds nothing', async (t) => {
  const catalog = new Catalog()
  const index = new ContentIndex()
  index.addFile(fileOf(catalog, 'empty', []))
  t.equal(index.size, 0)
  index.removeFile(catalog.get('empty') as FileNode)
  t.equal(index.size, 0)
})

t.test('a chunk that occurs twice in one file has both places', async (t) => {
  const catalog = new Catalog()
  const index = new ContentIndex()
  const c = { id: leafId(1), length: 10 }
  const file = fileOf(catalog, 'twice', [c, { id: leafId(2), length: 5 }, c])
  index.addFile(file)
  t.strictSame(at(index.lookup(c.id)), [
    { file: 'twice', offset: 0, length: 10 },
    { file: 'twice', offset: 15, length: 10 },
  ])
  index.addFile(file) // adding again changes nothing
  t.equal(index.lookup(c.id).length, 2)
  index.removeFile(file)
  t.equal(index.size, 0)
})

t.test('two files sharing chunks: both are found, and removing one keeps the other', async (t) => {
  const catalog = new Catalog()
  const index = new ContentIndex()
  const a = fileOf(catalog, 'a', leaves(0, 10))
  const shared = leaves(3, 2) // chunks 3 and 4 of a
  const b = fileOf(catalog, 'b', [...shared, ...leaves(100, 1)])
  index.addFile(a)
  index.addFile(b)
  const offsetIn = (n: number) => leaves(0, n).reduce((s, l) => s + l.length, 0)
  t.strictSame(at(index.lookup(leafId(3))), [
    { file: 'a', offset: offsetIn(3), length: shared[0]!.length },
    { file: 'b', offset: 0, length: shared[0]!.length },
  ])
  t.strictSame(at(index.lookup(leafId(4))), [
    { file: 'a', offset: offsetIn(4), length: shared[1]!.length },
    { file: 'b', offset: shared[0]!.length, length: shared[1]!.length },
  ])

  index.removeFile(a)
  t.strictSame(at(index.lookup(leafId(3))), [{ file: 'b', offset: 0, length: shared[0]!.length }])
  t.strictSame(at(index.lookup(leafId(4))), [{ file: 'b', offset: shared[0]!.length, length: shared[1]!.length }])
  t.strictSame(index.lookup(leafId(0)), [], "a's own chunks are gone")
  t.strictSame(index.lookup(a.contentId), [], "a's root is gone")
  t.strictSame(at(index.lookup(b.contentId)), [{ file: 'b', offset: 0, length: b.size }])
  t.strictSame(at(index.lookup(leafId(100))), [{ file: 'b', offset: shared[0]!.length + shared[1]!.length, length: 1000 + (100 % 97) }])

  index.removeFile(b)
  t.equal(index.size, 0)
  index.removeFile(b) // removing twice is harmless
  t.equal(index.size, 0)
})

t.test('files that are not attached to a catalog are not returned', async (t) => {
  const catalog = new Catalog()
  const index = new ContentIndex()
  const a = fileOf(catalog, 'a', leaves(0, 5))
  const b = fileOf(catalog, 'b', leaves(2, 5)) // shares chunks 2, 3, 4
  index.addFile(a)
  index.addFile(b)
  catalog.detach(a)
  t.strictSame(index.lookup(leafId(0)), [])
  t.notOk(index.has(a.contentId))
  t.strictSame(at(index.lookup(leafId(2))).map((l) => l.file), ['b'])
  t.ok(index.has(leafId(6)))

  // a file in another catalog (the trash) is still attached, so it is found
  const trash = new Catalog()
  const c = fileOf(trash, 'c', leaves(50, 3))
  index.addFile(c)
  t.strictSame(at(index.lookup(leafId(51))).map((l) => l.file), ['c'])
})

t.test('forget drops one place of one id', async (t) => {
  const catalog = new Catalog()
  const index = new ContentIndex()
  const a = fileOf(catalog, 'a', leaves(0, 3))
  const b = fileOf(catalog, 'b', leaves(0, 3))
  index.addFile(a)
  index.addFile(b)
  t.equal(index.lookup(leafId(1)).length, 2)
  index.forget(leafId(1), a)
  t.strictSame(at(index.lookup(leafId(1))).map((l) => l.file), ['b'])
  t.equal(index.lookup(leafId(0)).length, 2, 'other ids keep both places')
  index.forget(leafId(1), b)
  t.notOk(index.has(leafId(1)))
  index.forget(leafId(1), b) // nothing left to forget
})

t.test('an id keeps at most PLACES_PER_ID places: the first stays, trashed places go before mirrored ones', async (t) => {
  const mirror = new Catalog()
  const trash = new Catalog()
  const index = new ContentIndex({}, (file) => mirror.contains(file))
  const parts = leaves(0, 3)
  const names = (id: Buffer) => index.lookup(id).map((l) => l.file.name)
  // versions of one content, the older ones moved to the trash as a rewrite does
  const v0 = fileOf(mirror, 'v0', parts)
  index.addFile(v0)
  for (let i = 1; i < PLACES_PER_ID; i++) index.addFile(fileOf(trash, `t${i}`, parts))
  t.equal(index.lookup(leafId(1)).length, PLACES_PER_ID)
  index.addFile(fileOf(mirror, 'm1', parts))
  t.strictSame(names(leafId(1)), ['v0', ...Array.from({ length: PLACES_PER_ID - 2 }, (_, i) => `t${i + 2}`), 'm1'], 'the oldest trashed place made room')
  for (let i = 2; i < 2 + PLACES_PER_ID; i++) index.addFile(fileOf(mirror, `m${i}`, parts))
  const kept = names(leafId(1))
  t.equal(kept.length, PLACES_PER_ID)
  t.equal(kept[0], 'v0', 'the first place stays')
  t.notOk(kept.some((n) => n.startsWith('t')), 'no trashed place is kept while mirrored ones come in')
  t.strictSame(names(v0.contentId), kept, 'every id of the content names the same places')

  // a first place that left the catalog is the one that goes
  mirror.detach(v0)
  index.addFile(fileOf(mirror, 'last', parts))
  t.equal(names(leafId(1)).length, PLACES_PER_ID)
  t.notOk(names(leafId(1)).includes('v0'))
  t.equal(names(leafId(1)).at(-1), 'last')
})

t.test('a file of one repeated chunk keeps a few places for it, not one per chunk', async (t) => {
  const catalog = new Catalog()
  const index = new ContentIndex()
  const zero = { id: leafId(0), length: 65536 }
  const file = fileOf(catalog, 'zeros', Array.from({ length: 20_000 }, () => zero))
  index.addFile(file)
  const offsets = at(index.lookup(zero.id)).map((l) => l.offset)
  t.equal(offsets.length, PLACES_PER_ID)
  t.equal(offsets[0], 0, 'the first place stays')
  t.equal(new Set(offsets).size, PLACES_PER_ID, 'distinct places')
  index.removeFile(file)
  t.equal(index.size, 0)
})
