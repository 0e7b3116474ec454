// One upload being assembled into a temporary file under `.sfm/tmp/`: CHUNK data is verified and
// written as it arrives; REFS are resolved through the content index, read back from the mirror,
// verified chunk by chunk and copied. Nothing here is visible in the mirror until the applier renames
// the finished file into place.
import { constants as fsc } from 'node:fs'
import { open, rm, type FileHandle } from 'node:fs/promises'
import { hash128, hashKey } from '../hash.js'
import { ContentTree } from '../tree.js'
import { copyFileRange, setMtimeNsFd } from '../fs/native.js'
import type { Chunk, Commit, Ref } from '../protocol/messages.js'
import { appliedMode } from '../protocol/modes.js'
import { MirrorError, fromFsError } from './mirror-error.js'
import type { Mirror, StagedFile } from './mirror.js'
import { chunkOffsets, type FileNode } from './store/catalog.js'

const COPY_BLOCK_BYTES = 1 << 20

/** Bytes accepted from the socket but not yet on disk; the session pauses reading above a bound. */
export interface WriteBudget {
  take(bytes: number): void
  give(bytes: number): void
}

export class Upload {
  private fd: FileHandle | null = null
  private opening: Promise<FileHandle> | null = null
  private readonly tmpPath: string
  private size = 0
  private readonly ids: Buffer[] = []
  private readonly lengths: number[] = []
  /** Chunks sent as CHUNK in this upload, so later REFS may name them [REFS: "sent earlier"]. */
  private readonly own = new Map<string, { offset: number; length: number }>()
  private chain: Promise<void> = Promise.resolve()
  private failure: MirrorError | null = null

  constructor(
    readonly id: number,
    private readonly mirror: Mirror,
    private readonly budget: WriteBudget,
  ) {
    this.tmpPath = mirror.newTempPath(`upload-${id}`)
  }

  get failed(): boolean {
    return this.failure !== null
  }

  addChunk(msg: Chunk): void {
    if (this.failure) return
    const data = msg.data
    if (!hash128(data).equals(msg.hash)) {
      // [M-CHUNK-2] the upload fails; its COMMIT reports it
      this.fail(new MirrorError('SFM_ERR_HASH_MISMATCH', `chunk ${msg.hash.toString('hex')} does not match its data`))
      return
    }
    const offset = this.size
    this.record(msg.hash, data.length)
    this.own.set(hashKey(msg.hash), { offset, length: data.length })
    this.budget.take(data.length)
    this.enqueue((fd) => writeAll(fd, data, offset), data.length)
  }

  addRefs(refs: readonly Ref[]): void {
    for (const ref of refs) {
      if (this.failure) return
      this.addRef(ref)
    }
  }

  private addRef(ref: Ref): void {
    const offset = this.size
    const own = this.own.get(hashKey(ref.hash))
    if (own && own.length === ref.length) {
      this.record(ref.hash, ref.length)
      this.enqueue((fd) => copyWithin(fd, own.offset, offset, own.length))
      return
    }
    const loc = this.mirror.index.lookup(ref.hash).find((l) => l.length === ref.length)
    if (!loc) {
      this.fail(new MirrorError('SFM_ERR_MISSING', `missing content ${ref.hash.toString('hex')}`)) // [M-REFS-2]
      return
    }
    // The new file's chunk list takes the source's chunks for that range, so its tree can be built.
    const offsets = chunkOffsets(loc.file)
    const first = findChunk(offsets, loc.offset)
    const last = findChunk(offsets, loc.offset + loc.length)
    if (first < 0 || last < 0) {
      this.mirror.forgetStale(loc.file)
      this.fail(new MirrorError('SFM_ERR_MISSING', `content ${ref.hash.toString('hex')} is not on chunk boundaries`))
      return
    }
    for (let i = first; i < last; i++) {
      this.record(loc.file.manifest.ids.subarray(i * 16, i * 16 + 16), loc.file.manifest.lengths[i]!)
    }
    this.enqueue((fd) => this.copyFromMirror(fd, loc.file, first, last, offset, ref.hash))
  }

  /**
   * Copies chunks [first, last) of a mirror file to `dst` [M-SEM-3]. A file the server wrote and that
   * has not changed since (same inode, size, mtime and ctime) is copied inside the kernel, cloned where
   * the file system can; any other is read, and each chunk checked against its id.
   */
  private async copyFromMirror(dst: FileHandle, file: FileNode, first: number, last: number, dstOffset: number, id: Buffer) {
    const src = await this.mirror.openForRead(file)
    if (!src) throw new MirrorError('SFM_ERR_MISSING', `content ${id.toString('hex')} is gone`)
    try {
      const offsets = chunkOffsets(file)
      const st = await src.stat({ bigint: true })
      if (st.ino === file.ino && Number(st.size) === file.size && st.mtimeNs === file.mtimeNs && st.ctimeNs === file.ctimeNs) {
        const bytes = offsets[last]! - offsets[first]!
        if ((await copyFileRange(src.fd, offsets[first]!, dst.fd, dstOffset, bytes)) !== bytes) throw this.stale(file, id)
        return
      }
      const buf = Buffer.allocUnsafe(COPY_BLOCK_BYTES + (1 << 20)) // a block plus one chunk of any size
      let i = first
      let out = dstOffset
      while (i < last) {
        // read a run of whole chunks, at most COPY_BLOCK_BYTES (or one chunk if it is larger)
        let j = i + 1
        while (j < last && offsets[j + 1]! - offsets[i]! <= COPY_BLOCK_BYTES) j++
        const start = offsets[i]!
        const bytes = offsets[j]! - start
        const view = buf.subarray(0, bytes)
        const { bytesRead } = await src.read(view, 0, bytes, start)
        if (bytesRead !== bytes) throw this.stale(file, id)
        for (let k = i; k < j; k++) {
          const chunk = view.subarray(offsets[k]! - start, offsets[k + 1]! - start)
          if (!hash128(chunk).equals(file.manifest.ids.subarray(k * 16, k * 16 + 16))) throw this.stale(file, id)
        }
        await writeAll(dst, view, out)
        out += bytes
        i = j
      }
    } finally {
      await src.close()
    }
  }

  private stale(file: FileNode, id: Buffer): MirrorError {
    this.mirror.forgetStale(file)
    return new MirrorError('SFM_ERR_MISSING', `content ${id.toString('hex')} failed verification`)
  }

  /**
   * Waits for every write, checks the result against the COMMIT [M-COMMIT-1], sets mode and mtime,
   * and flushes the data if asked. Returns what the mirror needs to rename it into place.
   */
  async stage(commit: Commit, fsync: boolean): Promise<StagedFile> {
    const fd = await this.handle()
    await this.chain
    if (this.failure) throw this.failure
    if (this.size !== commit.size) {
      throw new MirrorError('SFM_ERR_CONTENT_MISMATCH', `upload has ${this.size} bytes, COMMIT says ${commit.size}`)
    }
    const ids = Buffer.concat(this.ids)
    const lengths = Uint32Array.from(this.lengths)
    const tree = ContentTree.fromLeaves(ids, lengths)
    if (!tree.contentId.equals(commit.contentId)) {
      throw new MirrorError('SFM_ERR_CONTENT_MISMATCH', `content id of ${commit.path} does not match its chunks`)
    }
    try {
      await fd.chmod(appliedMode('file', commit.mode))
      setMtimeNsFd(fd.fd, commit.mtimeNs)
      if (fsync) await fd.datasync()
      const st = await fd.stat({ bigint: true })
      return {
        tmpPath: this.tmpPath,
        size: this.size,
        contentId: tree.contentId,
        manifest: { ids, lengths },
        mode: commit.mode,
        mtimeNs: commit.mtimeNs,
        ino: st.ino,
      }
    } catch (err) {
      throw fromFsError(err, commit.path)
    } finally {
      await this.closeHandle()
    }
  }

  /** Drops the temporary file (ABORT, a failed COMMIT, or a closed connection). */
  async discard(): Promise<void> {
    this.failure ??= new MirrorError('SFM_ERR_IO', 'upload abandoned')
    await this.chain
    await this.closeHandle()
    await rm(this.tmpPath, { force: true })
  }

  private record(id: Uint8Array, length: number): void {
    this.ids.push(Buffer.from(id))
    this.lengths.push(length)
    this.size += length
  }

  /**
   * Queues work on the temporary file, in order. `budgeted` bytes of socket data it holds are given
   * back to the budget when it is done, and also when it is skipped because the upload failed.
   */
  private enqueue(work: (fd: FileHandle) => Promise<void>, budgeted = 0): void {
    this.chain = this.chain.then(async () => {
      try {
        if (!this.failure) await work(await this.handle())
      } catch (err) {
        this.fail(fromFsError(err, 'upload'))
      } finally {
        if (budgeted > 0) this.budget.give(budgeted)
      }
    })
  }

  private fail(err: MirrorError): void {
    this.failure ??= err
  }

  private handle(): Promise<FileHandle> {
    if (this.fd) return Promise.resolve(this.fd)
    this.opening ??= open(this.tmpPath, fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600).then((fd) => {
      this.fd = fd
      return fd
    })
    return this.opening
  }

  private async closeHandle(): Promise<void> {
    const fd = this.fd ?? (this.opening ? await this.opening.catch(() => null) : null)
    this.fd = null
    this.opening = null
    if (fd) await fd.close().catch(() => {})
  }
}

/** The index of the chunk that starts at `offset`, or -1 if no chunk starts there. */
function findChunk(offsets: Float64Array, offset: number): number {
  let lo = 0
  let hi = offsets.length - 1
  while (lo <= hi) {
    const mid = (lo + hi) >> 1
    const v = offsets[mid]!
    if (v === offset) return mid
    if (v < offset) lo = mid + 1
    else hi = mid - 1
  }
  return -1
}

async function writeAll(fd: FileHandle, data: Uint8Array, position: number): Promise<void> {
  let done = 0
  while (done < data.length) {
    const { bytesWritten } = await fd.write(data, done, data.length - done, position + done)
    done += bytesWritten
  }
}

async function copyWithin(fd: FileHandle, from: number, to: number, length: number): Promise<void> {
  const buf = Buffer.allocUnsafe(length)
  const { bytesRead } = await fd.read(buf, 0, length, from)
  if (bytesRead !== length) throw new MirrorError('SFM_ERR_IO', 'short read of an earlier chunk')
  await writeAll(fd, buf, to)
}
