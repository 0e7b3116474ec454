import t from 'tap'
import { basename } from 'node:path'
import { EMPTY_CONTENT_ID, hash128, toHex } from '../src/hash.js'
import { ContentTree, contentIdOf, type TreeLevel } from '../src/tree.js'
import { treeIds } from '../src/client/uploader.js'
import { listVectors, readVector } from './helpers/vectors.js'

interface Entry {
  id: Buffer
  length: number
  children: number
}

// Leaf i of the `xxh128-counter` recipe of spec/README-chunker.md: id XXH3-128(u64 big-endian i).
function counterLeaves(count: number, length: number, lastByte?: number): Entry[] {
  const counter = Buffer.alloc(8)
  return Array.from({ length: count }, (_, i) => {
    counter.writeBigUInt64BE(BigInt(i))
    const id = hash128(counter)
    if (lastByte !== undefined) id[15] = lastByte
    return { id, length, children: 0 }
  })
}

// PROTOCOL.md 5.3 written out plainly, with arrays of entries: the oracle for src/tree.ts.
function refLevels(leaves: Entry[]): Entry[][] {
  const levels = [leaves]
  for (let level = leaves; level.length > 1; ) {
    const up: Entry[] = []
    let group: Entry[] = []
    level.forEach((e, i) => {
      group.push(e)
      if ((group.length >= 2 && (e.id[15]! & 0x3f) === 0) || group.length === 512 || i === level.length - 1) {
        if (group.length === 1) up.push({ ...group[0]!, children: 1 })
        else {
          const parts = group.flatMap((g) => [g.id, u64(g.length)])
          up.push({ id: hash128(Buffer.concat(parts)), length: group.reduce((a, g) => a + g.length, 0), children: group.length })
        }
        group = []
      }
    })
    levels.push(up)
    level = up
  }
  return levels
}

function u64(n: number): Buffer {
  const b = Buffer.alloc(8)
  b.writeBigUInt64BE(BigInt(n))
  return b
}

function build(leaves: Entry[]): ContentTree {
  return ContentTree.fromLeaves(Buffer.concat(leaves.map((l) => l.id)), leaves.map((l) => l.length))
}

function entriesOf(tree: ContentTree, level: number): Entry[] {
  const lv = tree.levels[level]!
  return Array.from({ length: lv.count }, (_, i) => ({ id: tree.entryId(level, i), length: lv.lengths[i]!, children: lv.childCount[i]! }))
}

const asJson = (es: Entry[]) => es.map((e) => ({ id: toHex(e.id), length: e.length, children: e.children }))

for (const file of listVectors('spec/tree')) {
  t.test(`spec/tree/${basename(file)} matches the tree and the reference`, async (t) => {
    const v = readVector(file)
    const leaves: Entry[] = Array.isArray(v.leaves)
      ? v.leaves.map((l: { id: string; length: number }) => ({ id: Buffer.from(l.id, 'hex'), length: l.length, children: 0 }))
      : counterLeaves(v.leaves.count, v.leaves.length, v.leaves.lastByte)
    const expected = v.levels.map((l: { entries: { id: string; length: number; children: number }[] }) =>
      l.entries.map(({ id, length, children }) => ({ id, length, children })),
    )
    v.levels.forEach((l: { level: number }, k: number) => t.equal(l.level, k + 1))
    // From the vector to the spec: the reference builds the same levels, and each preimage hashes to its id.
    const ref = refLevels(leaves)
    t.same(ref.slice(1).map(asJson), expected, 'the reference builds the levels of the vector')
    for (const l of v.levels) {
      for (const e of l.entries) {
        if (e.preimage) t.equal(toHex(hash128(Buffer.from(e.preimage.join('').replace(/ /g, ''), 'hex'))), e.id)
      }
    }
    // From the code to the vector.
    const tree = build(leaves)
    t.equal(tree.levels.length, v.levels.length + 1)
    t.same(tree.levels.slice(1).map((_, k) => asJson(entriesOf(tree, k + 1))), expected)
    t.equal(toHex(tree.contentId), v.contentId)
    t.equal(tree.size, v.size)
    t.equal(toHex(contentIdOf(Buffer.concat(leaves.map((l) => l.id)), leaves.map((l) => l.length))), v.contentId)
  })
}

t.test('an empty file has the hash of the empty input as content id', async (t) => {
  const tree = ContentTree.fromLeaves(Buffer.alloc(0), [])
  t.equal(toHex(tree.contentId), '99aa06d3014798d86001c324468d497f')
  t.ok(tree.contentId.equals(EMPTY_CONTENT_ID))
  t.equal(tree.size, 0)
  t.equal(tree.levels.length, 1)
  t.equal(tree.levels[0]!.count, 0)
})

t.test('a one-entry group passes its child through unchanged', async (t) => {
  // Leaf 1 is a boundary, so leaf 2 ends up alone: it stands for itself one level up.
  const leaves = [0x01, 0x40, 0x02].map((last, i) => ({ id: Buffer.alloc(16, i + 1).fill(last, 15), length: 1000 + i, children: 0 }))
  const tree = build(leaves)
  const lv = tree.levels[1]!
  t.same([...lv.childCount], [2, 1])
  t.same([...lv.childStart], [0, 2])
  t.ok(tree.entryId(1, 1).equals(leaves[2]!.id), 'same id as its child')
  t.equal(lv.lengths[1], 1002, 'same length as its child')
  t.equal(lv.offsets[1], 2001, 'same offset as its child')
  // Over many trees: every entry with one child equals that child. A file whose second-to-last chunk is
  // a boundary leaves its last chunk alone at level 1; higher up it happens by the same chance.
  const pool = counterLeaves(6_000, 65_536)
  let passThrough = 0
  for (let n = 3; n <= pool.length && passThrough < 100; n++) {
    if ((pool[n - 2]!.id[15]! & 0x3f) !== 0) continue
    const tree = build(pool.slice(0, n))
    for (let k = 1; k < tree.levels.length; k++) {
      const up = tree.levels[k]!
      for (let i = 0; i < up.count; i++) {
        if (up.childCount[i] !== 1) continue
        passThrough++
        const c = up.childStart[i]!
        if (!tree.entryId(k, i).equals(tree.entryId(k - 1, c)) || up.lengths[i] !== tree.levels[k - 1]!.lengths[c]) {
          t.fail(`entry ${i} of level ${k} of a tree of ${n} leaves differs from its only child`)
        }
      }
    }
  }
  t.ok(passThrough >= 100, `${passThrough} pass-through entries, each equal to its child`)
})

t.test('groups are cut at MAX_FANOUT entries when no id marks a boundary', async (t) => {
  const tree = build(counterLeaves(1_100, 4_096, 0x01))
  t.same([...tree.levels[1]!.childCount], [512, 512, 76])
  t.same([...tree.levels[1]!.childStart], [0, 512, 1024])
  const exact = build(counterLeaves(1_024, 4_096, 0x01))
  t.same([...exact.levels[1]!.childCount], [512, 512], 'exactly two full groups: no empty third one')
})

t.test('levels hold running offsets and children that tile the level below', async (t) => {
  const leaves = counterLeaves(5_000, 0).map((l, i) => ({ ...l, length: 1 + ((i * 7_919) % 100_000) }))
  const tree = build(leaves)
  t.same(tree.levels.map((_, k) => asJson(entriesOf(tree, k))), refLevels(leaves).map(asJson), 'as the reference')
  for (let k = 0; k < tree.levels.length; k++) {
    const lv = tree.levels[k]!
    const offsets: number[] = []
    const starts: number[] = []
    for (let i = 0, offset = 0, next = 0; i < lv.count; i++) {
      offsets.push(offset)
      offset += lv.lengths[i]!
      starts.push(next)
      next += lv.childCount[i]!
    }
    t.same([...lv.offsets], offsets, `level ${k}: each offset is the sum of the lengths before it`)
    t.equal(offsets[lv.count - 1]! + lv.lengths[lv.count - 1]!, tree.size, `level ${k} covers the file`)
    if (k === 0) {
      t.ok(lv.childCount.every((c) => c === 0), 'leaves have no children')
      continue
    }
    t.same([...lv.childStart], starts, `level ${k}: each group starts where the one before ended`)
    t.equal(lv.childCount.reduce((a, c) => a + c, 0), tree.levels[k - 1]!.count, `level ${k} covers the level below`)
  }
  t.equal(tree.levels[tree.levels.length - 1]!.count, 1)
})

t.test('an edit in the middle of a long file changes only the ids on its path to the root', async (t) => {
  const leaves = counterLeaves(20_000, 60_000)
  const before = build(leaves)
  const ids = (tree: ContentTree) => new Set(tree.levels.flatMap((_, k) => entriesOf(tree, k).map((e) => toHex(e.id))))
  const old = ids(before)
  const height = before.levels.length
  t.equal(height, 4, 'leaves and three levels above')

  // Overwrite: leaf 10,000 gets new content, with an id that is no boundary, as the old one was not.
  t.not(leaves[10_000]!.id[15]! & 0x3f, 0)
  const edited = leaves.slice()
  edited[10_000] = { id: Buffer.alloc(16, 0xab), length: 60_000, children: 0 }
  const after = build(edited)
  const fresh = [...ids(after)].filter((id) => !old.has(id))
  t.equal(fresh.length, height, 'one new id per level: the leaf, its node, ..., the root')
  t.same(after.levels.map((l) => l.count), before.levels.map((l) => l.count), 'the shape is unchanged')

  // Insert: a new chunk between leaves 9,999 and 10,000 (an insert of 1 KiB of bytes, say).
  const insert = (fill: number) =>
    build([...leaves.slice(0, 10_000), { id: Buffer.alloc(16, fill), length: 1_024, children: 0 }, ...leaves.slice(10_000)])
  const grown = insert(0xce)
  t.equal([...ids(grown)].filter((id) => !old.has(id)).length, height, 'one new id per level again')
  t.equal(grown.size, before.size + 1_024)

  // The path's new ids can change which of them are boundaries. Here the new level-2 id ends in 0x00, so
  // its group on level 3 closes early: the root's group splits in two and a level is added. The ids off
  // the path still all survive.
  const regrouped = insert(0xcd)
  t.equal(toHex(regrouped.entryId(2, 1)).slice(-2), '00')
  t.equal(regrouped.levels.length, height + 1)
  const freshPerLevel = regrouped.levels.map((_, k) => entriesOf(regrouped, k).filter((e) => !old.has(toHex(e.id))).length)
  t.same(freshPerLevel, [1, 1, 1, 2, 1])
})

t.test('fromLeaves refuses leaves that do not describe a file', async (t) => {
  t.throws(() => ContentTree.fromLeaves(Buffer.alloc(31), [1, 2]), RangeError, 'ids not 16 bytes each')
  t.throws(() => ContentTree.fromLeaves(Buffer.alloc(32), [1, 0]), RangeError, 'a chunk of no bytes')
  t.throws(() => ContentTree.fromLeaves(Buffer.alloc(16), [1.5]), RangeError, 'a fractional length')
  t.throws(() => ContentTree.fromLeaves(Buffer.alloc(32), [2 ** 53 - 1, 1]), RangeError, 'over 2^53 - 1 bytes')
})

t.test('entryId is a view of the level, not a copy', async (t) => {
  const tree = build(counterLeaves(3, 10))
  const lv: TreeLevel = tree.levels[0]!
  t.equal(tree.entryId(0, 2).buffer, lv.ids.buffer)
  t.equal(tree.entryId(0, 2).byteOffset, lv.ids.byteOffset + 32)
  t.equal(tree.entryId(0, 2).length, 16)
})

t.test('one-chunk trees share nothing that differs between them', async (t) => {
  const a = build(counterLeaves(1, 5))
  const b = build(counterLeaves(1, 7))
  const big = build(counterLeaves(3, 10))
  for (const [tree, length] of [[a, 5], [b, 7]] as const) {
    t.equal(tree.levels.length, 1)
    t.equal(tree.size, length)
    t.same([...tree.levels[0]!.lengths], [length])
    t.same([...tree.levels[0]!.offsets], [0])
    t.same([...tree.levels[0]!.childCount], [0])
    t.ok(tree.contentId.equals(counterLeaves(1, 1)[0]!.id), 'the chunk is the root')
  }
  t.same([...big.levels[0]!.offsets], [0, 10, 20], 'a longer tree has its own offsets')
})

t.test('treeIds lists every distinct id of the tree once', async (t) => {
  t.equal(treeIds(ContentTree.fromLeaves(Buffer.alloc(0), [])).length, 0, 'the empty file: none')
  const one = build(counterLeaves(1, 3))
  t.ok(treeIds(one).equals(one.contentId), 'one chunk: its id, which is the content id')

  const tree = build(counterLeaves(2000, 10)) // several levels, with groups of one passed through
  t.ok(tree.levels.length >= 3)
  const all = new Set<string>()
  for (let l = 0; l < tree.levels.length; l++) for (let i = 0; i < tree.levels[l]!.count; i++) all.add(toHex(tree.entryId(l, i)))
  const listed = treeIds(tree)
  t.equal(listed.length % 16, 0)
  const got = Array.from({ length: listed.length / 16 }, (_, i) => toHex(listed.subarray(i * 16, i * 16 + 16)))
  t.equal(got.length, all.size, 'each id once')
  t.same(new Set(got), all)
  t.equal(got[got.length - 1], toHex(tree.contentId), 'the content id last')
})
