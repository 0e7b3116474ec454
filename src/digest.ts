// Digests of file contents: the chunks (PROTOCOL.md 5.4), their ids, and the content tree (5.3).
import { constants, promises as fsp } from 'node:fs'
import type { BigIntStats } from 'node:fs'
import { Chunker, chunkLengths } from './chunker.js'
import { HASH_BYTES, hash128 } from './hash.js'
import { ContentTree } from './tree.js'

export const DEFAULT_BLOCK_BYTES = 4 * 1024 * 1024

// O_NOFOLLOW: a symlink is never followed, opening one fails with ELOOP. O_NONBLOCK: opening a FIFO does
// not wait for a writer, so the type check below can refuse it; it changes nothing for regular files.
// Windows defines neither, and `| undefined` adds no bit.
const OPEN_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK

export interface Digest {
  /** Bytes digested: the sum of `lengths`. */
  readonly size: number
  /** The chunk ids, HASH_BYTES each, in file order (the tree's leaf ids). */
  readonly ids: Buffer
  readonly lengths: Float64Array
  readonly offsets: Float64Array
  readonly tree: ContentTree
  readonly contentId: Buffer
}

/** What fstat said of the open file. */
export interface FileIdentity {
  readonly size: number
  readonly mtimeNs: bigint
  readonly ctimeNs: bigint
  readonly ino: bigint
}

export interface FileDigest extends Digest {
  /** Before the first read and after the last: if they differ, the file changed while it was read. */
  readonly statBefore: FileIdentity
  readonly statAfter: FileIdentity
}

export interface DigestOptions {
  /** Bytes per read; memory is about twice this (reads overlap chunking). */
  readonly blockBytes?: number
}

/** True if two fstat results describe the same, unchanged file. */
export function sameIdentity(a: FileIdentity, b: FileIdentity): boolean {
  return a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs && a.ino === b.ino
}

/** The FileIdentity of a `stat({ bigint: true })` result. */
export function identityOf(st: BigIntStats): FileIdentity {
  return { size: Number(st.size), mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, ino: st.ino }
}

/** Digests bytes already in memory. */
export function digestBuffer(buf: Uint8Array): Digest {
  const lengths = chunkLengths(buf)
  const ids = Buffer.allocUnsafe(lengths.length * HASH_BYTES)
  for (let i = 0, off = 0; i < lengths.length; off += lengths[i++]!) {
    hash128(buf.subarray(off, off + lengths[i]!)).copy(ids, i * HASH_BYTES)
  }
  return digestOf(ids, lengths)
}

/**
 * Reads a regular file in blocks and digests it, three steps at once: while one block is cut (on the
 * thread pool, where the addon is built), the chunks of the block before are hashed, and the next
 * block is read. Memory is three blocks plus the chunk list, whatever the file's size.
 */
export async function digestFile(path: string, opts: DigestOptions = {}): Promise<FileDigest> {
  const blockBytes = opts.blockBytes ?? DEFAULT_BLOCK_BYTES
  if (!(Number.isInteger(blockBytes) && blockBytes >= 1)) throw new RangeError(`blockBytes ${blockBytes}`)
  const fh = await fsp.open(path, OPEN_FLAGS)
  let reading: Promise<{ bytesRead: number }> | null = null
  try {
    const before = await fh.stat({ bigint: true })
    if (!before.isFile()) {
      throw Object.assign(new Error(`not a regular file: ${path}`), { code: before.isDirectory() ? 'EISDIR' : 'EINVAL' })
    }
    const statBefore = identityOf(before)
    const leaves = new LeafCollector()
    // Chunks cut but not hashed yet, in file order: views of the block cut last, and copies of the
    // chunks cut from the chunker's own buffer, which its next push reuses.
    let unhashed: Buffer[] = []
    const copyOf = (chunk: Buffer): void => void unhashed.push(Buffer.from(chunk))
    const chunker = new Chunker()
    // Blocks no larger than the file (plus one byte, so that one read reaches its end).
    const n = Math.max(1, Math.min(blockBytes, statBefore.size + 1))
    const blocks: Buffer[] = [Buffer.allocUnsafe(n)] // more as the file needs them, up to three
    let which = 0
    let pos = 0
    reading = fh.read(blocks[0]!, 0, n, 0)
    while (reading !== null) {
      const { bytesRead }: { bytesRead: number } = await reading
      reading = null
      if (bytesRead === 0) break
      const block = blocks[which]!
      pos += bytesRead
      // A short read that reaches the size seen at open is the end of the file: this saves one read per
      // small file. A file that grew meanwhile shows in statAfter.
      if (bytesRead === n || pos < statBefore.size) {
        which = (which + 1) % 3
        reading = fh.read((blocks[which] ??= Buffer.allocUnsafe(n)), 0, n, pos)
      }
      const cutting = chunker.cutOffThread(block.subarray(0, bytesRead), copyOf)
      for (const chunk of unhashed) leaves.add(chunk)
      unhashed = await cutting
    }
    for (const chunk of unhashed) leaves.add(chunk)
    chunker.finish((chunk) => leaves.add(chunk))
    const statAfter = identityOf(await fh.stat({ bigint: true }))
    return { ...digestOf(leaves.ids(), leaves.lengths), statBefore, statAfter }
  } finally {
    // A read still under way when something threw must end before the file is closed.
    if (reading !== null) await (reading as Promise<unknown>).catch(() => {})
    await fh.close()
  }
}

function digestOf(ids: Buffer, lengths: ArrayLike<number>): Digest {
  const tree = ContentTree.fromLeaves(ids, lengths)
  const leaves = tree.levels[0]!
  return { size: tree.size, ids, lengths: leaves.lengths, offsets: leaves.offsets, tree, contentId: tree.contentId }
}

// Chunk ids and lengths as they are cut. The ids go into one buffer that doubles as needed: 16 bytes
// per chunk, where a Buffer object per id would cost several times that.
class LeafCollector {
  readonly lengths: number[] = []
  private buf = Buffer.allocUnsafe(16 * HASH_BYTES)

  add(chunk: Buffer): void {
    const at = this.lengths.length * HASH_BYTES
    if (at === this.buf.length) {
      const next = Buffer.allocUnsafe(2 * this.buf.length)
      this.buf.copy(next)
      this.buf = next
    }
    hash128(chunk).copy(this.buf, at)
    this.lengths.push(chunk.length)
  }

  /** The ids, in a buffer of exactly their size. */
  ids(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.lengths.length * HASH_BYTES))
  }
}
