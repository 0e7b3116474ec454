// One upload being assembled into a file of its own: an unnamed one in the mirror's file system where
// it can (O_TMPFILE), else a temporary file under `.sfm/tmp/`. CHUNK data is verified and written as it
// arrives; REFS are resolved through the content index and copied from the mirror (in
// the kernel from a file the server wrote and nobody touched since; otherwise read back and verified
// chunk by chunk). Nothing here is visible in the mirror until the applier names (links) or renames the
// finished file into place.
//
// Small work on one file is done with synchronous system calls: a write of a chunk into the page
// cache, or the metadata of a file, takes microseconds, where a round trip through the thread pool
// costs tens of them. What can take long (a flush, a big copy) goes to the thread pool, and so do the
// many small files of a batch, made together in one job each (createHeldFiles).
import { closeSync, constants as fsc, fchmodSync, fdatasync, fstatSync, fsync, openSync, readSync, rmSync, write, writeSync } from 'node:fs'
import { HASH_BYTES, hash128, hashKey } from '../hash.js'
import { ContentTree } from '../tree.js'
import { DIRECT_IO_ALIGN, bytesToAlign, copyFileRange, copyThrough, createUnnamedFiles, directWritesAvailable, linkUnnamedFile, openUnnamedFile, setMtimeNsFd, type NewFile } from '../fs/native.js'
import type { Chunk, Commit, Ref } from '../protocol/messages.js'
import { appliedMode } from '../protocol/modes.js'
import { DirectWrites } from './direct-writes.js'
import { MirrorError, fromFsError } from './mirror-error.js'
import type { Mirror, StagedFile } from './mirror.js'
import { chunkOffsets, type FileNode, type Manifest } from './store/catalog.js'
import { keepIds, keepLengths } from './store/slabs.js'
import { keepId } from '../util/id-slab.js'

const COPY_BLOCK_BYTES = 1 << 20
const EMPTY = new Uint8Array(0)
/** Ranges up to this size are copied with a read and a write on the main thread. */
const SMALL_COPY_BYTES = 256 << 10
/**
 * Copied ranges whose aligned middle is this big or bigger are written through to the disk
 * (copyThrough) when the upload is flushed before it is confirmed: that flush then has nothing left
 * of them to write, and no page-cache memory is taken for them. Replacing a 1 GiB file after a
 * 1-byte change: the copy and flush took 0.7-2.9 s here, most of it the kernel finding new pages;
 * written through, 0.5-1.1 s.
 */
const WRITE_THROUGH_BYTES = 1 << 20
/**
 * CHUNK data from this size on is written on the thread pool, so that receiving and checking the next
 * chunks overlaps with the copy into the page cache; smaller writes are cheaper done at once. sfm's own
 * chunks (at most 128 KiB) are all written at once: handing each to the thread pool cost more than the
 * copy it overlapped (8 new files of 96 MiB: 2.7-2.9 s against 3.2-3.6 s, sfmd CPU 2.3 s against 3.1 s).
 * Chunks of up to MAX_CHUNK_BYTES from other clients still go to the pool.
 */
const ASYNC_WRITE_BYTES = 256 << 10
/**
 * CHUNK data past this offset of an upload that will be flushed before it is confirmed is written to
 * the disk with O_DIRECT (see direct-writes.ts). Smaller files stay in the page cache: a direct write
 * costs a trip through the thread pool, and the flush of a small file is cheap.
 */
const DIRECT_AFTER_BYTES = 1 << 20
/**
 * A big upload is flushed in the background every this many bytes, so that the flush before its
 * rename (for durability) has little left to write.
 */
const WRITE_BEHIND_BYTES = 64 << 20
/**
 * An upload whose first CHUNK is at most this big keeps a copy of it while no more comes: a small file
 * is then made and written with the other small files of its batch, in one job on the thread pool
 * (createHeldFiles), instead of with four system calls on the main thread as its chunk arrives. The
 * copy lets go of the socket read it came in. What is held is bounded by the uploads a session may
 * have open or committed and unanswered (max_open_uploads + max_inflight: 17 MiB by default).
 */
const HOLD_BYTES = 16 << 10

interface HeldSlab {
  readonly buf: Buffer
  used: number
  /** Copies in it not let go yet. */
  live: number
}

/**
 * Where held CHUNK copies live: slabs reused once every copy in them is let go. A Buffer per copy (or
 * per batch of them, to hand to createFiles) lives through its batch's staging, long enough to reach
 * V8's old space, and tens of MiB of them waited there for a major GC: sfmd's peak RSS in benchmark W2
 * reached 186-241 MiB, against 164-175 MiB before files were held.
 */
class HeldSlabs {
  private static readonly SLAB_BYTES = 256 << 10
  private static readonly SPARE_SLABS = 4
  private current = HeldSlabs.slab()
  private readonly spare: HeldSlab[] = []

  /** A copy of `data` (at most SLAB_BYTES), and the slab to let go of once it is written. */
  copy(data: Uint8Array): { bytes: Buffer; slab: HeldSlab } {
    if (this.current.used + data.length > this.current.buf.length) {
      const full = this.current
      this.current = this.spare.pop() ?? HeldSlabs.slab()
      if (full.live === 0) this.recycle(full)
    }
    const slab = this.current
    const bytes = slab.buf.subarray(slab.used, slab.used + data.length)
    bytes.set(data)
    slab.used += data.length
    slab.live++
    return { bytes, slab }
  }

  letGo(slab: HeldSlab): void {
    if (--slab.live > 0) return
    if (slab === this.current) slab.used = 0
    else this.recycle(slab)
  }

  private recycle(slab: HeldSlab): void {
    slab.used = 0
    if (this.spare.length < HeldSlabs.SPARE_SLABS) this.spare.push(slab)
  }

  private static slab(): HeldSlab {
    return { buf: Buffer.allocUnsafeSlow(HeldSlabs.SLAB_BYTES), used: 0, live: 0 }
  }
}

const heldSlabs = new HeldSlabs()

/**
 * Work accepted from the socket but not done yet: data held until it is written, and (`copy`) bytes
 * of REFS queued to be copied. The session stops reading above a bound for each, so that neither
 * can queue without limit.
 */
export interface WriteBudget {
  take(bytes: number, copy?: boolean): void
  give(bytes: number, copy?: boolean): void
}

export class Upload {
  private fd: number | null = null
  /** The upload's only CHUNK so far, while no file is open for it (see HOLD_BYTES), and its slab. */
  private held: { bytes: Buffer; slab: HeldSlab } | null = null
  /** The file was made with the COMMIT's mode and mtime already set (createHeldFiles). */
  private attributesSet = false
  /** The file's name under `.sfm/tmp/`; null while it has none (an unnamed file, or none opened yet). */
  private tmpPath: string | null = null
  private size = 0
  /** The chunk ids so far, side by side in one growing Buffer (not one Buffer per chunk). */
  private ids = Buffer.allocUnsafe(HASH_BYTES * 4) // short-lived: stage() copies the ids into a slab
  private idBytes = 0
  private readonly lengths: number[] = []
  /** Chunks sent as CHUNK in this upload, so later REFS may name them [REFS: "sent earlier"]. */
  private readonly own = new Map<string, { offset: number; length: number }>()
  /** Copies from the mirror, one after another (each may open a file and take a while). */
  private copies: Promise<void> = Promise.resolve()
  /** The last copy from the mirror queued, while it has not started. */
  private queuedCopy: QueuedCopy | null = null
  /** Writes under way on the thread pool (positional: their order does not matter). */
  private readonly writes = new Set<Promise<void>>()
  private unflushed = 0
  private flushing: Promise<void> | null = null
  private failure: MirrorError | null = null
  /** CHUNK data past DIRECT_AFTER_BYTES, when written through (null: through the page cache). */
  private readonly direct: DirectWrites | null

  /** `writeThrough`: the upload is flushed to disk before it is confirmed (sfmd's default). */
  constructor(
    readonly id: number,
    private readonly mirror: Mirror,
    private readonly budget: WriteBudget,
    private readonly writeThrough = false,
  ) {
    this.direct =
      writeThrough && directWritesAvailable()
        ? new DirectWrites({
            writeBuffered: (data, offset) => writeAllSync(this.handle(), data, offset),
            track: (write, bytes) => this.track(write, bytes),
          })
        : null
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
    if (offset === 0 && this.fd === null && data.length <= HOLD_BYTES) {
      this.held = heldSlabs.copy(data)
      return
    }
    try {
      const fd = this.handle()
      // positional writes: independent of other writes
      if (this.direct && offset >= DIRECT_AFTER_BYTES && this.direct.add(fd, data, offset)) return
      if (data.length < ASYNC_WRITE_BYTES) writeAllSync(fd, data, offset)
      else this.track(writeAll(fd, data, offset).then(() => this.written(fd, data.length)), data.length)
    } catch (err) {
      this.fail(fromFsError(err, 'upload'))
    }
  }

  /** A write on the thread pool: its data is held against the budget until it is written. */
  private track(write: Promise<void>, bytes: number): void {
    this.budget.take(bytes)
    const w = write
      .catch((err: unknown) => this.fail(fromFsError(err, 'upload')))
      .finally(() => {
        this.writes.delete(w)
        this.budget.give(bytes)
      })
    this.writes.add(w)
  }

  /** Writes the CHUNK data gathered for a direct write: before a REF, and before the upload is staged. */
  private flushDirect(): void {
    if (!this.direct || this.fd === null) return
    try {
      this.direct.flush(this.fd)
    } catch (err) {
      this.fail(fromFsError(err, 'upload'))
    }
  }

  /** Counts bytes put in the file; past WRITE_BEHIND_BYTES a background flush starts. */
  private written(fd: number, bytes: number): void {
    this.unflushed += bytes
    if (this.unflushed >= WRITE_BEHIND_BYTES && !this.flushing && this.fd === fd) this.flushBehind(fd)
  }

  /** Starts a flush of what is written so far; nothing waits for it except stage(). */
  private flushBehind(fd: number): void {
    this.unflushed = 0
    this.flushing = new Promise<void>((resolve) => fdatasync(fd, () => resolve())).finally(() => {
      this.flushing = null
    })
  }

  addRefs(refs: readonly Ref[]): void {
    for (const ref of refs) {
      if (this.failure) return
      this.addRef(ref)
    }
  }

  private addRef(ref: Ref): void {
    this.flushDirect() // an earlier chunk of this upload that the REF names must be in the file
    const offset = this.size
    const own = this.own.get(hashKey(ref.hash))
    if (own && own.length === ref.length) {
      this.record(ref.hash, ref.length)
      this.copies = this.copies.then(async () => {
        try {
          await this.settled() // the earlier chunk may still be on its way to the file
          if (!this.failure) copySync(this.handle(), own.offset, this.handle(), offset, own.length)
        } catch (err) {
          this.fail(fromFsError(err, 'upload'))
        }
      })
      return
    }
    const place = this.findPlace(ref, new Set())
    if (!place) {
      this.fail(new MirrorError('SFM_ERR_MISSING', `missing content ${ref.hash.toString('hex')}`)) // [M-REFS-2]
      return
    }
    // The new file's chunk list takes the source's chunks for that range, so its tree can be built.
    this.recordRange(place.file.manifest, place.first, place.last)
    this.budget.take(ref.length, true)
    // A REF that goes on where the queued copy stops, in the same file, makes that copy longer: a copied
    // or grown file comes as one REF per ~2 MiB node, and one copy costs less than hundreds.
    const last = this.queuedCopy
    if (last && last.place.file === place.file && last.place.last === place.first && last.dstOffset + last.bytes === offset) {
      last.place.last = place.last
      last.bytes += ref.length
      last.refs.push({ ref: ownRef(ref), offset })
      return
    }
    const copy: QueuedCopy = { place, dstOffset: offset, bytes: ref.length, refs: [{ ref: ownRef(ref), offset }] }
    this.queuedCopy = copy
    this.copies = this.copies.then(async () => {
      if (this.queuedCopy === copy) this.queuedCopy = null // started: it grows no more
      try {
        if (!this.failure) await this.runCopy(copy)
      } catch (err) {
        this.fail(fromFsError(err, 'upload'))
      } finally {
        this.budget.give(copy.bytes, true)
      }
    })
  }

  /**
   * Copies a queued range from its place. A place found when the REFS arrived may have left before its
   * turn came: an old version expiring from the trash, a file removed or changed behind the server.
   * Each REF is then copied from another place with its id, which holds the same chunks, so the chunk
   * list recorded from the first place stays right.
   */
  private async runCopy(copy: QueuedCopy): Promise<void> {
    const { file, first, last } = copy.place
    if (await this.copiedFrom(file, first, last, copy.dstOffset, copy.refs[0]!.ref.hash)) return
    for (const { ref, offset } of copy.refs) await this.copyFromElsewhere(ref, offset, file)
  }

  /** Copies `ref` to `dstOffset` from the first place the index still has for it, other than `left`. */
  private async copyFromElsewhere(ref: Ref, dstOffset: number, left: FileNode): Promise<void> {
    const tried = new Set<FileNode>([left])
    for (let place = this.findPlace(ref, tried); place !== null; place = this.findPlace(ref, tried)) {
      tried.add(place.file)
      if (await this.copiedFrom(place.file, place.first, place.last, dstOffset, ref.hash)) return
    }
    throw new MirrorError('SFM_ERR_MISSING', `content ${ref.hash.toString('hex')} is gone`) // [M-REFS-2]
  }

  /** copyFromMirror, false when that place no longer has the content (SFM_ERR_MISSING). */
  private async copiedFrom(file: FileNode, first: number, last: number, dstOffset: number, id: Buffer): Promise<boolean> {
    try {
      await this.copyFromMirror(file, first, last, dstOffset, id)
      return true
    } catch (err) {
      if (err instanceof MirrorError && err.code === 'SFM_ERR_MISSING') return false
      throw err
    }
  }

  /** The first place the index gives for `ref` that is not in `tried`. */
  private findPlace(ref: Ref, tried: ReadonlySet<FileNode>): Place | null {
    for (const { file, first, last } of this.mirror.index.lookup(ref.hash)) {
      if (tried.has(file)) continue
      const offsets = chunkOffsets(file)
      if (offsets[last]! - offsets[first]! === ref.length) return { file, first, last }
    }
    return null
  }

  /**
   * Copies chunks [first, last) of a mirror file into this upload at `dstOffset` [M-SEM-3]. A file the
   * server wrote and that has not changed since (same inode, size, mtime and ctime) is copied as is:
   * in the kernel for big ranges, cloned where the file system can. Any other is read, and each chunk
   * checked against its id.
   */
  private async copyFromMirror(file: FileNode, first: number, last: number, dstOffset: number, id: Buffer): Promise<void> {
    const abs = this.mirror.absPathOf(file)
    let src: number
    if (abs === null) throw new MirrorError('SFM_ERR_MISSING', `content ${id.toString('hex')} is gone`)
    try {
      src = openSync(abs, fsc.O_RDONLY | fsc.O_NOFOLLOW)
    } catch {
      throw this.stale(file, id) // removed or replaced behind the server
    }
    try {
      const dst = this.handle()
      const offsets = chunkOffsets(file)
      const start = offsets[first]!
      const bytes = offsets[last]! - start
      const st = fstatSync(src, { bigint: true })
      if (st.ino === file.ino && Number(st.size) === file.size && st.mtimeNs === file.mtimeNs && st.ctimeNs === file.ctimeNs) {
        const copied = bytes <= SMALL_COPY_BYTES ? this.copyWritten(src, start, dst, dstOffset, bytes) : await this.copyBig(src, start, dst, dstOffset, bytes)
        if (copied !== bytes) throw this.stale(file, id)
        return
      }
      const buf = Buffer.allocUnsafe(COPY_BLOCK_BYTES + (1 << 20)) // a block plus one chunk of any size
      let i = first
      let out = dstOffset
      while (i < last) {
        // read a run of whole chunks, at most COPY_BLOCK_BYTES (or one chunk if it is larger)
        let j = i + 1
        while (j < last && offsets[j + 1]! - offsets[i]! <= COPY_BLOCK_BYTES) j++
        const runStart = offsets[i]!
        const runBytes = offsets[j]! - runStart
        const view = buf.subarray(0, runBytes)
        if (readAllSync(src, view, runStart) !== runBytes) throw this.stale(file, id)
        for (let k = i; k < j; k++) {
          const chunk = view.subarray(offsets[k]! - runStart, offsets[k + 1]! - runStart)
          if (!hash128(chunk).equals(file.manifest.ids.subarray(k * 16, k * 16 + 16))) throw this.stale(file, id)
        }
        writeAllSync(dst, view, out)
        out += runBytes
        i = j
        await new Promise<void>((resolve) => setImmediate(resolve)) // let the socket breathe between blocks
      }
    } finally {
      closeSync(src)
    }
  }

  /**
   * A big range of an unchanged mirror file: its aligned middle written through to the disk where
   * the upload will be flushed anyway (see WRITE_THROUGH_BYTES), the rest copied in the kernel.
   * Returns the bytes copied.
   */
  private async copyBig(src: number, from: number, dst: number, to: number, length: number): Promise<number> {
    const head = Math.min(length, bytesToAlign(to))
    const middle = length - head - ((length - head) % DIRECT_IO_ALIGN)
    if (this.writeThrough && middle >= WRITE_THROUGH_BYTES) {
      const through = await copyThrough(src, from + head, dst, to + head, middle)
      if (through !== null) {
        if (through < middle) return through // the source ended early: stale
        const tail = length - head - middle
        return this.copyWritten(src, from, dst, to, head) + through + this.copyWritten(src, from + head + middle, dst, to + head + middle, tail)
      }
    }
    const copied = await copyFileRange(src, from, dst, to, length)
    this.written(dst, copied)
    return copied
  }

  /** copySync, counted for the background flush. */
  private copyWritten(src: number, from: number, dst: number, to: number, length: number): number {
    if (length === 0) return 0
    const copied = copySync(src, from, dst, to, length)
    this.written(dst, copied)
    return copied
  }

  private stale(file: FileNode, id: Buffer): MirrorError {
    this.mirror.forgetStale(file)
    return new MirrorError('SFM_ERR_MISSING', `content ${id.toString('hex')} failed verification`)
  }

  /**
   * Waits for the copies, checks the result against the COMMIT [M-COMMIT-1], sets mode and mtime, and
   * flushes the file if asked (`flush`: the caller does not flush the whole file system instead).
   * Returns what the mirror needs to put it in place; the file stays open until release() or discard().
   */
  async stage(commit: Commit, flush: boolean): Promise<StagedFile> {
    this.flushDirect()
    await this.copies
    await this.settled()
    if (this.failure) throw this.failure
    if (this.size !== commit.size) {
      throw new MirrorError('SFM_ERR_CONTENT_MISMATCH', `upload has ${this.size} bytes, COMMIT says ${commit.size}`)
    }
    const ids = keepIds([this.ids.subarray(0, this.idBytes)])
    const lengths = keepLengths(this.lengths)
    const tree = ContentTree.fromLeaves(ids, lengths)
    if (!tree.contentId.equals(commit.contentId)) {
      throw new MirrorError('SFM_ERR_CONTENT_MISMATCH', `content id of ${commit.path} does not match its chunks`)
    }
    // a file of one chunk has that chunk's id as its content id: one Buffer for both
    const contentId = ids.length === HASH_BYTES ? ids : keepId(tree.contentId)
    try {
      const fd = this.handle()
      if (!this.attributesSet) {
        fchmodSync(fd, appliedMode('file', commit.mode))
        setMtimeNsFd(fd, commit.mtimeNs)
      }
      if (flush) {
        // Flushed on its own, the file first gets a name under .sfm/tmp: a link made after the flush
        // would reach the disk with the directory but without the inode's new link count. The flush is
        // then an fsync, since that link count is metadata; the rename into place needs no more.
        const linked = this.tmpPath === null
        if (linked) {
          const tmpPath = this.mirror.newTempPath(`upload-${this.id}`)
          linkUnnamedFile(fd, tmpPath)
          this.tmpPath = tmpPath
        }
        await new Promise<void>((resolve, reject) => (linked ? fsync : fdatasync)(fd, (err) => (err ? reject(err) : resolve())))
      }
      return {
        tmpPath: this.tmpPath,
        fd,
        size: this.size,
        contentId,
        manifest: { ids, lengths },
        mode: commit.mode,
        mtimeNs: commit.mtimeNs,
      }
    } catch (err) {
      this.closeHandle()
      throw fromFsError(err, commit.path)
    }
  }

  /** Closes the file once the mirror has put it in place. */
  release(): void {
    this.closeHandle()
  }

  /** release(), but the caller closes the file: returns its descriptor, if it has one open. */
  releaseHandle(): number | null {
    const fd = this.fd
    this.fd = null
    return fd
  }

  /** Drops the temporary file (ABORT, a failed COMMIT, or a closed connection). */
  async discard(): Promise<void> {
    this.failure ??= new MirrorError('SFM_ERR_IO', 'upload abandoned')
    this.direct?.drop()
    this.letGoHeld()
    await this.copies
    await this.settled()
    this.closeHandle()
    if (this.tmpPath !== null) rmSync(this.tmpPath, { force: true })
  }

  /** Waits for every write and background flush to end (the fd must outlive them). */
  private async settled(): Promise<void> {
    while (this.writes.size > 0) await Promise.all([...this.writes])
    if (this.flushing) await this.flushing
  }

  private record(id: Uint8Array, length: number): void {
    this.roomForIds(HASH_BYTES)
    this.ids.set(id, this.idBytes)
    this.idBytes += HASH_BYTES
    this.lengths.push(length)
    this.size += length
  }

  /** Records chunks [first, last) of another file's manifest: a whole range of REFS in one copy. */
  private recordRange(manifest: Manifest, first: number, last: number): void {
    this.roomForIds((last - first) * HASH_BYTES)
    this.ids.set(manifest.ids.subarray(first * HASH_BYTES, last * HASH_BYTES), this.idBytes)
    this.idBytes += (last - first) * HASH_BYTES
    for (let i = first; i < last; i++) {
      const length = manifest.lengths[i]!
      this.lengths.push(length)
      this.size += length
    }
  }

  private roomForIds(bytes: number): void {
    if (this.idBytes + bytes <= this.ids.length) return
    const grown = Buffer.allocUnsafe(Math.max(this.ids.length * 2, this.idBytes + bytes))
    this.ids.copy(grown, 0, 0, this.idBytes)
    this.ids = grown
  }

  private fail(err: MirrorError): void {
    this.failure ??= err
  }

  /**
   * The upload's file, opened on first use. An unnamed file costs the file system no directory entry
   * to add, look up and remove under .sfm/tmp, and a server killed meanwhile leaves nothing behind.
   */
  private handle(): number {
    if (this.fd === null) {
      const unnamed = openUnnamedFile(this.mirror.tmpDir, 0o600)
      if (unnamed !== null) this.fd = unnamed
      else {
        const tmpPath = this.mirror.newTempPath(`upload-${this.id}`)
        this.fd = openSync(tmpPath, fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600)
        this.tmpPath = tmpPath
      }
      if (this.held) {
        writeAllSync(this.fd, this.held.bytes, 0)
        this.letGoHeld()
      }
    }
    return this.fd
  }

  /**
   * The whole content, when it is all in memory and no file is open yet: the held CHUNK, or nothing
   * (the empty file). Null for any other upload.
   */
  private inMemory(): Uint8Array | null {
    if (this.fd !== null || this.failure) return null
    if (this.held) return this.size === this.held.bytes.length ? this.held.bytes : null
    return this.size === 0 ? EMPTY : null
  }

  private letGoHeld(): void {
    if (this.held) heldSlabs.letGo(this.held.slab)
    this.held = null
  }

  /**
   * Makes the files of the uploads among `commits` that are all in memory, on the thread pool and
   * in one job, each with its COMMIT's mode and mtime; stage() then finds them made. A file that
   * could not be made this way is left as it was: stage() makes it on the main thread, and meets the
   * error, if any, itself.
   */
  static async createHeldFiles(mirror: Mirror, commits: ReadonlyArray<{ upload: Upload; commit: Commit }>): Promise<void> {
    const made: Upload[] = []
    const files: NewFile[] = []
    for (const { upload, commit } of commits) {
      const data = upload.inMemory()
      if (data === null) continue
      made.push(upload)
      files.push({ data, mode: appliedMode('file', commit.mode), mtimeNs: commit.mtimeNs })
    }
    if (files.length === 0) return
    // One job, not two at once: on ext4 right after a mass delete, each new inode is found by a scan past
    // the recently deleted ones, and two threads making files took more system time than one (W2 right
    // after deleting the previous mirror: 12.7 and 15.8 s against 10.1 and 13.8 s, in alternate runs),
    // for no gain measured otherwise.
    const results = await createUnnamedFiles(mirror.tmpDir, files)?.catch(() => null) // stage() makes them
    results?.forEach((r, i) => {
      if (typeof r !== 'number') return
      const upload = made[i]!
      upload.fd = r
      upload.attributesSet = true
      upload.letGoHeld()
    })
  }

  private closeHandle(): void {
    if (this.fd !== null) {
      try {
        closeSync(this.fd)
      } catch {
        // already closed: nothing to release
      }
    }
    this.fd = null
  }
}

/** Where the index says some content is: chunks [first, last) of a mirror file. */
interface Place {
  file: FileNode
  first: number
  last: number
}

/** REFS to consecutive chunks of one mirror file, to be copied to consecutive bytes of the upload. */
interface QueuedCopy {
  place: Place
  dstOffset: number
  bytes: number
  refs: Array<{ ref: Ref; offset: number }>
}

/**
 * A REF whose id no longer views the frame it came in: a queued copy may wait its turn behind
 * hundreds of others, and each id kept a 64 KiB socket read alive (sfmd's peak RSS reached 216 MiB
 * with 256 MiB of copies queued).
 */
function ownRef(ref: Ref): Ref {
  return { hash: Buffer.from(ref.hash), length: ref.length }
}

function writeAllSync(fd: number, data: Uint8Array, position: number): void {
  for (let done = 0; done < data.length; ) done += writeSync(fd, data, done, data.length - done, position + done)
}

function writeAll(fd: number, data: Uint8Array, position: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (done: number) => {
      if (done === data.length) return resolve()
      write(fd, data, done, data.length - done, position + done, (err, n) => (err ? reject(err) : step(done + n)))
    }
    step(0)
  })
}

function readAllSync(fd: number, into: Buffer, position: number): number {
  let n = 0
  while (n < into.length) {
    const got = readSync(fd, into, n, into.length - n, position + n)
    if (got === 0) break
    n += got
  }
  return n
}

/** Copies a small range with one read and one write; returns the bytes copied (fewer at end of file). */
function copySync(src: number, from: number, dst: number, to: number, length: number): number {
  const buf = Buffer.allocUnsafe(length)
  const n = readAllSync(src, buf, from)
  writeAllSync(dst, buf.subarray(0, n), to)
  return n
}
