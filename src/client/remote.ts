// The client's view of the mirror: the server's listing, updated as each change is sent (the server
// applies changes in the order it receives them, so "sent" is what the next decision must build on).
import { hashKey } from '../hash.js'
import type { DirEntry, ListEntry, SymlinkEntry } from '../protocol/messages.js'
import { isSameOrBelow, parentOf } from '../protocol/paths.js'

/**
 * A file of the mirror, its content id kept as a hash key (hash.ts): the model holds one per file of
 * the folder, and a 16-character string costs a third of a Buffer view (about 100 bytes a file).
 */
export interface RemoteFile {
  readonly kind: 'file'
  readonly path: string
  readonly mode: number
  readonly mtimeNs: bigint
  readonly size: number
  readonly contentKey: string
}

/** An entry whose state on the server is unknown (a change to it failed): it matches nothing. */
export interface UnknownEntry {
  readonly kind: 'unknown'
  readonly path: string
}

export type RemoteEntry = RemoteFile | DirEntry | SymlinkEntry | UnknownEntry

/** The model's entry for an entry of the server's listing. */
function remoteEntryOf(e: ListEntry): RemoteEntry {
  if (e.kind !== 'file') return e
  return { kind: 'file', path: e.path, mode: e.mode, mtimeNs: e.mtimeNs, size: e.size, contentKey: hashKey(e.contentId) }
}

export class RemoteTree {
  private readonly entries = new Map<string, RemoteEntry>()
  // children by parent path ('' for the root), so that subtrees move and vanish without a full scan
  private readonly children = new Map<string, Set<string>>()

  constructor(listing: Iterable<ListEntry> = []) {
    for (const e of listing) this.set(remoteEntryOf(e))
  }

  get size(): number {
    return this.entries.size
  }

  get(path: string): RemoteEntry | undefined {
    return this.entries.get(path)
  }

  has(path: string): boolean {
    return this.entries.has(path)
  }

  /** Whether the mirror's file at `path` has exactly this content (a content id's hashKey). */
  hasContentAt(path: string, contentKey: string): boolean {
    const e = this.entries.get(path)
    return e?.kind === 'file' && e.contentKey === contentKey
  }

  paths(): IterableIterator<string> {
    return this.entries.keys()
  }

  /** Sets one entry; a non-directory replaces whatever was below the path. */
  set(entry: RemoteEntry): void {
    const old = this.entries.get(entry.path)
    if (old?.kind === 'dir' && entry.kind !== 'dir') this.removeBelow(entry.path)
    this.entries.set(entry.path, entry)
    const parent = parentOf(entry.path) ?? ''
    let set = this.children.get(parent)
    if (!set) this.children.set(parent, (set = new Set()))
    set.add(entry.path)
  }

  markUnknown(path: string): void {
    this.set({ kind: 'unknown', path })
  }

  /** Removes the entry and everything below it. */
  delete(path: string): void {
    this.removeBelow(path)
    this.entries.delete(path)
    this.children.get(parentOf(path) ?? '')?.delete(path)
  }

  /** The paths directly inside `dir` ('' for the top), or none. */
  childrenOf(dir: string): ReadonlySet<string> {
    return this.children.get(dir) ?? NO_CHILDREN
  }

  /** Every path strictly below `path`. */
  *below(path: string): Generator<string> {
    const kids = this.children.get(path)
    if (!kids) return
    for (const child of kids) {
      yield child
      yield* this.below(child)
    }
  }

  /** Moves an entry and its subtree from `from` to `to`, replacing what was at `to`. */
  move(from: string, to: string): void {
    const moved: RemoteEntry[] = []
    for (const p of [from, ...this.below(from)]) {
      const e = this.entries.get(p)
      if (e) moved.push({ ...e, path: to + p.slice(from.length) })
    }
    this.delete(from)
    this.delete(to)
    for (const e of moved) this.set(e)
  }

  private removeBelow(path: string): void {
    for (const p of [...this.below(path)]) {
      this.entries.delete(p)
      this.children.delete(p)
    }
    this.children.delete(path)
  }
}

const NO_CHILDREN: ReadonlySet<string> = new Set()

export function isBelowAny(path: string, roots: Iterable<string>): boolean {
  for (const r of roots) if (path !== r && isSameOrBelow(path, r)) return true
  return false
}
