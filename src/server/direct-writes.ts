// New data of a big upload on its way to the disk with O_DIRECT, when the upload is flushed before it
// is confirmed anyway (sfmd's default). Consecutive CHUNK data is copied into an aligned block, and
// each full block is written to the disk on the thread pool, past the page cache.
//
// Why: on this VM the expensive part of writing a new file is the kernel finding a new page for every
// 4 KiB of it. 768 MiB written to new files and flushed took 2.0-2.6 s (1.7-2.1 s of system time)
// through the cache, and 0.4-0.6 s (0.1-0.2 s) with O_DIRECT. A backup host's memory also stays with
// what is read rather than filling with copies of what was written.
//
// Only whole aligned pages go direct: the bytes up to the first aligned offset and the tail of the
// last block go through the cache. The two never share a page, which O_DIRECT needs to stay coherent.
import { DIRECT_IO_ALIGN, alignedBuffer, bytesToAlign, writeThroughAt } from '../fs/native.js'

const BLOCK_BYTES = 1 << 20
/**
 * Blocks kept for reuse once written, for the next upload: sfmd keeps them for good, and its peak RSS
 * on benchmark W4 reached 200 MiB with 8. While an upload runs, blocks freed and made again come from
 * malloc's own free memory.
 */
const POOL_BLOCKS = 2

const pool: Buffer[] = []

function takeBlock(): Buffer | null {
  return pool.pop() ?? alignedBuffer(BLOCK_BYTES)
}

function giveBlock(block: Buffer): void {
  if (pool.length < POOL_BLOCKS) pool.push(block)
}

/** What DirectWrites needs of its upload. */
export interface DirectSink {
  /** Writes through the page cache, at once. */
  writeBuffered(data: Buffer, offset: number): void
  /** A write under way: the upload waits for it before it is staged, and fails if it fails. */
  track(write: Promise<void>, bytes: number): void
}

export class DirectWrites {
  private block: Buffer | null = null
  /** The file offset of block[0]. */
  private start = 0
  private filled = 0

  constructor(private readonly sink: DirectSink) {}

  /** Takes `data`, which goes at `offset` of the file open as `fd`; false if it cannot (no addon). */
  add(fd: number, data: Buffer, offset: number): boolean {
    if (this.block && this.start + this.filled !== offset) this.flush(fd)
    if (!this.block) {
      const block = takeBlock()
      if (!block) return false
      const head = Math.min(data.length, bytesToAlign(offset))
      if (head > 0) this.sink.writeBuffered(data.subarray(0, head), offset)
      this.block = block
      this.start = offset + head
      this.filled = 0
      data = data.subarray(head)
    }
    while (data.length > 0) {
      const n = Math.min(data.length, BLOCK_BYTES - this.filled)
      data.copy(this.block, this.filled, 0, n)
      this.filled += n
      data = data.subarray(n)
      if (this.filled === BLOCK_BYTES) {
        this.submit(fd, this.block, BLOCK_BYTES, this.start)
        this.start += BLOCK_BYTES
        this.filled = 0
        this.block = takeBlock()
        if (!this.block) {
          // no more aligned memory: the rest goes through the cache
          if (data.length > 0) this.sink.writeBuffered(data, this.start)
          return true
        }
      }
    }
    return true
  }

  /** Writes what is gathered: its whole pages direct, the rest through the cache. */
  flush(fd: number): void {
    const block = this.block
    if (!block) return
    this.block = null
    const whole = this.filled - (this.filled % DIRECT_IO_ALIGN)
    if (this.filled > whole) this.sink.writeBuffered(block.subarray(whole, this.filled), this.start + whole)
    if (whole > 0) this.submit(fd, block, whole, this.start)
    else giveBlock(block)
  }

  /** Drops what is gathered (the upload is abandoned). */
  drop(): void {
    if (this.block) giveBlock(this.block)
    this.block = null
  }

  private submit(fd: number, block: Buffer, length: number, offset: number): void {
    const write = writeThroughAt(fd, block, length, offset)
      .then((direct) => {
        // O_DIRECT refused here (tmpfs): through the cache after all
        if (!direct) this.sink.writeBuffered(block.subarray(0, length), offset)
      })
      .finally(() => giveBlock(block))
    this.sink.track(write, length)
  }
}
