// The content tree of PROTOCOL.md 5.3: a file's chunks as leaves, grouped level by level up to one
// entry whose id is the file's content id.
import { EMPTY_CONTENT_ID, HASH_BYTES, hash128 } from './hash.js'
import { MAX_FANOUT, MAX_SAFE_U64 } from './protocol/constants.js'

// A group closes after an entry whose last id byte has these bits clear: on average every 64 entries.
const BOUNDARY_MASK = 0x3f
const ENTRY_BYTES = HASH_BYTES + 8 // what a node hashes per child: id ‖ u64 length
const TWO_32 = 2 ** 32
// What every one-chunk tree has in common: its chunk's offset and its (absent) children. A folder of
// small files builds one tree per file; sharing these saves three of its four typed arrays (about
// 650 of 1,200 bytes), which the uploads of W2 otherwise carry into the old generation.
const ZERO_F64 = new Float64Array(1)
const ZERO_U32 = new Uint32Array(1)

/**
 * One level of a tree, as parallel arrays: entry i has id `ids[16i .. 16i+16)`, its length and byte
 * offset within the file, and its children `childStart[i] .. childStart[i] + childCount[i]` on the level
 * below. childCount is 0 on the leaves, 1 for an entry that stands for itself (same id and length as its
 * one child), and 2..MAX_FANOUT for a node.
 */
export interface TreeLevel {
  // Read-only once built, like the whole tree: arrays may be shared between trees (see ZERO_F64).
  readonly count: number
  readonly ids: Buffer
  readonly lengths: Float64Array
  readonly offsets: Float64Array
  readonly childStart: Uint32Array
  readonly childCount: Uint32Array
}

export class ContentTree {
  /** levels[0] holds the leaves; the last level holds one entry, the root (none for the empty file). */
  readonly levels: readonly TreeLevel[]
  readonly contentId: Buffer
  readonly size: number

  private constructor(levels: TreeLevel[]) {
    this.levels = levels
    const top = levels[levels.length - 1]!
    this.contentId = top.count === 0 ? EMPTY_CONTENT_ID : top.ids.length === HASH_BYTES ? top.ids : top.ids.subarray(0, HASH_BYTES)
    this.size = top.count === 0 ? 0 : top.lengths[0]!
  }

  /**
   * Builds the tree over the chunks of a file: `ids` holds n ids of HASH_BYTES each, `lengths` their n
   * lengths. The tree keeps `ids` as its leaf level without copying it: do not change it afterwards.
   */
  static fromLeaves(ids: Buffer, lengths: ArrayLike<number>): ContentTree {
    const n = lengths.length
    if (ids.length !== n * HASH_BYTES) {
      throw new RangeError(`${ids.length} bytes of ids for ${n} chunk lengths`)
    }
    const leafLengths = new Float64Array(n)
    const offsets = n === 1 ? ZERO_F64 : new Float64Array(n)
    let total = 0
    for (let i = 0; i < n; i++) {
      const len = lengths[i]!
      if (!(Number.isInteger(len) && len >= 1)) throw new RangeError(`chunk ${i} has length ${len}`)
      leafLengths[i] = len
      if (i > 0) offsets[i] = total // offsets[0] is 0 as allocated (and shared when n is 1)
      total += len
    }
    if (total > MAX_SAFE_U64) throw new RangeError(`a file of ${total} bytes is over 2^53 - 1 [M-CONV-1]`)
    const levels: TreeLevel[] = [
      { count: n, ids, lengths: leafLengths, offsets, childStart: n === 1 ? ZERO_U32 : new Uint32Array(n), childCount: n === 1 ? ZERO_U32 : new Uint32Array(n) },
    ]
    if (n > 1) {
      const scratch = Buffer.allocUnsafe(Math.min(n, MAX_FANOUT) * ENTRY_BYTES)
      while (levels[levels.length - 1]!.count > 1) levels.push(buildLevel(levels[levels.length - 1]!, scratch))
    }
    return new ContentTree(levels)
  }

  /** The id of entry i of a level, as a view into the tree (not a copy). */
  entryId(level: number, i: number): Buffer {
    return this.levels[level]!.ids.subarray(i * HASH_BYTES, (i + 1) * HASH_BYTES)
  }
}

/**
 * Whether a group that has just taken the entry with this id, reaching `size` entries, closes after it
 * (PROTOCOL.md 5.3, step 2; the end of the level closes the last group too).
 */
export function groupClosesAfter(id: Uint8Array, size: number): boolean {
  return (size >= 2 && (id[HASH_BYTES - 1]! & BOUNDARY_MASK) === 0) || size === MAX_FANOUT
}

/** The id of a node over these entries (two or more): hash of each id followed by its u64 length. */
export function nodeIdOf(ids: readonly Uint8Array[], lengths: readonly number[]): Buffer {
  const buf = Buffer.allocUnsafe(ids.length * ENTRY_BYTES)
  for (let i = 0; i < ids.length; i++) {
    buf.set(ids[i]!, i * ENTRY_BYTES)
    buf.writeUInt32BE(Math.floor(lengths[i]! / TWO_32), i * ENTRY_BYTES + HASH_BYTES)
    buf.writeUInt32BE(lengths[i]! >>> 0, i * ENTRY_BYTES + HASH_BYTES + 4)
  }
  return hash128(buf)
}

/** The content id alone, for callers that do not need the levels. */
export function contentIdOf(ids: Buffer, lengths: ArrayLike<number>): Buffer {
  return ContentTree.fromLeaves(ids, lengths).contentId
}

// One level up, by the three steps of PROTOCOL.md 5.3.
function buildLevel(below: TreeLevel, scratch: Buffer): TreeLevel {
  const { ids, lengths, offsets } = below
  const ends = groupEnds(below)
  const m = ends.length
  const up = {
    count: m,
    ids: Buffer.allocUnsafe(m * HASH_BYTES),
    lengths: new Float64Array(m),
    offsets: new Float64Array(m),
    childStart: new Uint32Array(m),
    childCount: new Uint32Array(m),
  }
  for (let g = 0, first = 0; g < m; first = ends[g++]!) {
    const end = ends[g]!
    let len = 0
    if (end - first === 1) {
      ids.copy(up.ids, g * HASH_BYTES, first * HASH_BYTES, end * HASH_BYTES) // stands for itself
      len = lengths[first]!
    } else {
      for (let c = first, at = 0; c < end; c++, at += ENTRY_BYTES) {
        ids.copy(scratch, at, c * HASH_BYTES, (c + 1) * HASH_BYTES)
        const cl = lengths[c]!
        scratch.writeUInt32BE(Math.floor(cl / TWO_32), at + HASH_BYTES) // u64 big-endian, high half
        scratch.writeUInt32BE(cl >>> 0, at + HASH_BYTES + 4)
        len += cl
      }
      hash128(scratch.subarray(0, (end - first) * ENTRY_BYTES)).copy(up.ids, g * HASH_BYTES)
    }
    up.lengths[g] = len
    up.offsets[g] = offsets[first]!
    up.childStart[g] = first
    up.childCount[g] = end - first
  }
  return up
}

// Where each group of a level ends (exclusive), so that the level above is allocated at its exact size.
// Only the last entry can close a group of one, so every level is smaller than the one below.
function groupEnds(level: TreeLevel): Uint32Array {
  const { count: n, ids } = level
  const ends = new Uint32Array(Math.ceil(n / 2)) // every group but the last has 2 entries or more
  let m = 0
  let first = 0
  for (let e = 0; e < n; e++) {
    if (groupClosesAfter(ids.subarray(e * HASH_BYTES, (e + 1) * HASH_BYTES), e - first + 1) || e === n - 1) {
      ends[m++] = e + 1
      first = e + 1
    }
  }
  return ends.slice(0, m)
}
