// The server's model of its mirror: a tree of entries that mirrors the folder on disk, so that a
// listing, a parent check or a rename of a whole subtree never needs a walk of the disk. The server is
// the only writer of the folder, so the model and the disk agree between operations.

export interface Manifest {
  /** Chunk ids, 16 bytes each, in file order. */
  readonly ids: Buffer
  readonly lengths: Uint32Array
}

interface NodeBase {
  name: string
  parent: DirNode | null
  mode: number
  mtimeNs: bigint
}

export interface FileNode extends NodeBase {
  readonly kind: 'file'
  size: number
  contentId: Buffer
  manifest: Manifest
  /**
   * Identity on disk when the server last wrote or verified the file. The change time (ctime) is
   * set by the kernel on every change and cannot be set by any program, so a file whose inode,
   * size, mtime and ctime all still match holds exactly the bytes of its manifest.
   */
  ino: bigint
  ctimeNs: bigint
  /** Byte offset of each chunk, computed when first needed. */
  offsets?: Float64Array
}

export interface DirNode extends NodeBase {
  readonly kind: 'dir'
  readonly children: Map<string, MirrorNode>
  /** Set when an operation inside changed the directory's mtime on disk: the model's value is stale. */
  mtimeStale: boolean
}

export interface SymlinkNode extends NodeBase {
  readonly kind: 'symlink'
  target: string
}

export type MirrorNode = FileNode | DirNode | SymlinkNode

export function newDir(name: string, mode: number, mtimeNs: bigint): DirNode {
  return { kind: 'dir', name, parent: null, mode, mtimeNs, children: new Map(), mtimeStale: false }
}

export function chunkOffsets(file: FileNode): Float64Array {
  if (!file.offsets) {
    const n = file.manifest.lengths.length
    const offsets = new Float64Array(n + 1)
    for (let i = 0; i < n; i++) offsets[i + 1] = offsets[i]! + file.manifest.lengths[i]!
    file.offsets = offsets
  }
  return file.offsets
}

/**
 * A tree of entries below one top directory. The mirror has one; the trash (deleted entries kept for
 * the grace period) has another, whose children are the trashed items.
 */
export class Catalog {
  readonly top: DirNode

  constructor(top: DirNode = newDir('', 0o755, 0n)) {
    this.top = top
  }

  get(path: string): MirrorNode | undefined {
    let node: MirrorNode = this.top
    for (const name of path.split('/')) {
      if (node.kind !== 'dir') return undefined
      const next: MirrorNode | undefined = node.children.get(name)
      if (!next) return undefined
      node = next
    }
    return node
  }

  /** The directory that holds `path` in the model, or what blocks it: a non-directory ancestor. */
  parentOf(path: string): { dir: DirNode; missing: string[] } | { blocker: string } {
    const names = path.split('/')
    names.pop()
    let dir = this.top
    for (let i = 0; i < names.length; i++) {
      const next = dir.children.get(names[i]!)
      if (!next) return { dir, missing: names.slice(i) }
      if (next.kind !== 'dir') return { blocker: names.slice(0, i + 1).join('/') }
      dir = next
    }
    return { dir, missing: [] }
  }

  /** Attaches `node` under `dir` as `name`, returning what it replaced (now detached). */
  attach(dir: DirNode, name: string, node: MirrorNode): MirrorNode | undefined {
    const old = dir.children.get(name)
    if (old) old.parent = null
    node.name = name
    node.parent = dir
    dir.children.set(name, node)
    return old
  }

  detach(node: MirrorNode): void {
    if (node.parent && node.parent.children.get(node.name) === node) node.parent.children.delete(node.name)
    node.parent = null
  }

  /** The path of an attached node relative to this catalog's top, or null if it is not below it. */
  pathOf(node: MirrorNode): string | null {
    const names: string[] = []
    let n: MirrorNode | null = node
    while (n && n !== this.top) {
      names.push(n.name)
      n = n.parent
    }
    return n === this.top ? names.reverse().join('/') : null
  }

  /** Whether `node` is attached below this catalog's top. */
  contains(node: MirrorNode): boolean {
    let n: MirrorNode | null = node
    while (n && n !== this.top) n = n.parent
    return n === this.top
  }

  *walk(from: DirNode = this.top, prefix = ''): Generator<[string, MirrorNode]> {
    for (const [name, node] of from.children) {
      const path = prefix ? `${prefix}/${name}` : name
      yield [path, node]
      if (node.kind === 'dir') yield* this.walk(node, path)
    }
  }

  /** Bytes of the longest path below `node` relative to it, with its leading '/' (0 for a leaf). */
  static deepestBelow(node: MirrorNode): number {
    if (node.kind !== 'dir') return 0
    let most = 0
    for (const child of node.children.values()) {
      most = Math.max(most, 1 + Buffer.byteLength(child.name) + Catalog.deepestBelow(child))
    }
    return most
  }

  static *files(node: MirrorNode): Generator<FileNode> {
    if (node.kind === 'file') yield node
    else if (node.kind === 'dir') for (const child of node.children.values()) yield* Catalog.files(child)
  }
}
