// Where the server can find content by id: every chunk id and every node id of every file it holds
// (PROTOCOL.md 5.3) maps to the places where those bytes are. Locations are hints: readers verify the
// bytes (or the file's unchanged identity) and drop locations that no longer match (see upload.ts).
//
// The index is an LRU bounded by entries and bytes, so the server's memory stays bounded whatever the
// size of the mirror: on a mirror too big for the bounds, the least recently used ids are forgotten,
// and content that only they named is sent again instead of being reused. Nothing else is lost.
import { LRUCache } from 'lru-cache'
import { hashKey } from '../../hash.js'
import { ContentTree } from '../../tree.js'
import type { FileNode } from './catalog.js'

/**
 * Chunks [first, last) of a file's manifest. Chunk indexes rather than byte offsets: they stay small
 * integers, which V8 keeps unboxed. One byte offset past 2^30 turned the fields of every Location
 * into boxed doubles: 80 bytes a Location instead of 24, for each id of every file held.
 */
export interface Location {
  readonly file: FileNode
  readonly first: number
  readonly last: number
}

/** Memory per indexed id: key, LRU links and one Location object. */
export const INDEX_ENTRY_BYTES = 160
/**
 * Places kept per id. One place is enough to copy from; more only cover places that leave before
 * their copy. Without a bound, each version of a big file kept in the trash added a Location to every
 * id it shares with the others (sfmd held 45 MB of them after 18 rewrites of a 1 GiB file in 40 s),
 * and a file of one repeated chunk (zeros) made an array as long as the file's chunk count.
 */
export const PLACES_PER_ID = 4
export const DEFAULT_INDEX_ENTRIES = 4 << 20
export const DEFAULT_INDEX_BYTES = 256 << 20

export interface IndexLimits {
  entries?: number
  bytes?: number
}

export class ContentIndex {
  // Most ids live in one file, so the value is a Location until a second place turns up.
  private readonly byId: LRUCache<string, Location | Location[]>

  /**
   * `inMirror` tells a file in the mirror from one in the trash: when an id has all the places it may
   * keep, a new place replaces one in the trash, which expires, before one in the mirror.
   */
  constructor(
    limits: IndexLimits = {},
    private readonly inMirror: (file: FileNode) => boolean = () => true,
  ) {
    // Both bounds as one size bound: lru-cache's `max` would allocate its arrays for `max` entries up
    // front (hundreds of MB for millions of entries, before anything is indexed).
    const entries = Math.max(1, limits.entries ?? DEFAULT_INDEX_ENTRIES)
    const bytes = Math.max(INDEX_ENTRY_BYTES, limits.bytes ?? DEFAULT_INDEX_BYTES)
    this.byId = new LRUCache({
      maxSize: Math.min(bytes, entries * INDEX_ENTRY_BYTES),
      sizeCalculation: (v) => INDEX_ENTRY_BYTES * (Array.isArray(v) ? v.length : 1),
    })
  }

  get size(): number {
    return this.byId.size
  }

  /** Records every node of the file's content tree at its place in the file. */
  addFile(file: FileNode): void {
    this.eachEntry(file, (key, first, last) => this.add(key, { file, first, last }))
  }

  removeFile(file: FileNode): void {
    this.eachEntry(file, (key) => this.remove(key, file))
  }

  /** Places where content with this id may be found, for files still in the catalog. */
  lookup(id: Uint8Array): Location[] {
    const key = hashKey(id)
    const v = this.byId.get(key) // a lookup makes the id recent
    if (!v) return []
    const all = Array.isArray(v) ? v : [v]
    const live = all.filter((loc) => loc.file.parent !== null)
    if (live.length !== all.length) this.set(key, live)
    return live
  }

  has(id: Uint8Array): boolean {
    return this.lookup(id).length > 0
  }

  /** Forgets one place, after its bytes failed verification. */
  forget(id: Uint8Array, file: FileNode): void {
    this.remove(hashKey(id), file)
  }

  /** Every distinct entry of the file's tree: its key and the chunks [first, last) it covers. */
  private eachEntry(file: FileNode, fn: (key: string, first: number, last: number) => void): void {
    const tree = ContentTree.fromLeaves(file.manifest.ids, file.manifest.lengths)
    // starts[i]: the first chunk below entry i of the level at hand; starts[count]: the chunk count
    let starts = new Uint32Array(tree.levels[0]!.count + 1).map((_, i) => i)
    for (let level = 0; level < tree.levels.length; level++) {
      const lv = tree.levels[level]!
      if (level > 0) {
        const below = starts
        starts = new Uint32Array(lv.count + 1)
        for (let i = 0; i < lv.count; i++) starts[i] = below[lv.childStart[i]!]!
        starts[lv.count] = below[below.length - 1]!
      }
      for (let i = 0; i < lv.count; i++) {
        // an entry that stood for itself one level up has the id of its only child: recorded once
        if (level > 0 && lv.childCount[i] === 1) continue
        fn(hashKey(tree.entryId(level, i)), starts[i]!, starts[i + 1]!)
      }
    }
  }

  private add(key: string, loc: Location): void {
    const v = this.byId.get(key)
    if (!v) this.byId.set(key, loc)
    else if (Array.isArray(v)) {
      if (v.some((l) => l.file === loc.file && l.first === loc.first)) return
      this.byId.set(key, (v.length < PLACES_PER_ID ? v : this.withoutOne(v)).concat(loc))
    } else if (!(v.file === loc.file && v.first === loc.first)) this.byId.set(key, [v, loc])
  }

  /**
   * The places but one. The first place stays while it is in the catalog: it is the one copies read
   * (see upload.ts, findPlace), so every id of a file keeps naming the same source and its copies
   * stay whole ranges, and it is likely still in the page cache where a later version, written past
   * the cache, is not (copying from those cost sfmd twice the system time). Of the others, the oldest
   * that has left the catalog or sits in the trash goes, else the oldest.
   */
  private withoutOne(places: Location[]): Location[] {
    let drop = places[0]!.file.parent === null ? 0 : places.findIndex((l, i) => i > 0 && (l.file.parent === null || !this.inMirror(l.file)))
    if (drop < 0) drop = 1
    return places.filter((_, i) => i !== drop)
  }

  private remove(key: string, file: FileNode): void {
    const v = this.byId.peek(key) // removing is not a use
    if (!v) return
    const all = Array.isArray(v) ? v : [v]
    this.set(key, all.filter((l) => l.file !== file))
  }

  private set(key: string, locs: Location[]): void {
    if (locs.length === 0) this.byId.delete(key)
    // concat copies to the exact length: a filtered array keeps spare room (100 bytes an id)
    else this.byId.set(key, locs.length === 1 ? locs[0]! : ([] as Location[]).concat(locs))
  }
}
