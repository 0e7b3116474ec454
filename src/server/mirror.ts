// The mirror folder on disk: the only module that changes it. It keeps the catalog (model of the
// tree), the content index and the journal in step with every change, writes new entries beside their
// final place under `.sfm/` and renames them in, and keeps what it deletes or replaces in `.sfm/trash/`
// for a grace period so that renames and copies across batches still find the old bytes.
import { randomBytes } from 'node:crypto'
import { type BigIntStats, chmodSync, constants as fsc, fstatSync, linkSync, lstatSync, mkdirSync, renameSync, rmSync, symlinkSync } from 'node:fs'
import { mkdir, open, readdir, readFile, writeFile, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { digestFile, sameIdentity } from '../digest.js'
import { FatalError, EXIT } from '../fatal.js'
import { scanTree, type LocalEntry } from '../client/scan.js'
import { linkUnnamedFile, nativeAvailable, setMtimeNs, syncFileSystem } from '../fs/native.js'
import { removeTree } from '../fs/remove-tree.js'
import type { Logger } from '../log.js'
import type { ListEntry } from '../protocol/messages.js'
import { MAX_PATH_BYTES } from '../protocol/constants.js'
import { MirrorDigest } from '../protocol/mirror-digest.js'
import { appliedMode } from '../protocol/modes.js'
import { isSameOrBelow } from '../protocol/paths.js'
import { Catalog, newDir, type DirNode, type FileNode, type Manifest, type MirrorNode } from './store/catalog.js'
import { ContentIndex, type IndexLimits } from './store/content-index.js'
import { Journal, type JournalRecord } from './store/journal.js'
import { LockHeld, PidLock } from '../util/pid-lock.js'
import { MirrorError, fromFsError } from './mirror-error.js'

export const SFM_DIR = '.sfm'
const DEFAULT_TRASH_TTL_MS = 60_000

export interface MirrorOptions {
  root: string
  index?: IndexLimits
  /** Accept a non-empty folder that sfm did not create, and reuse its content. */
  adopt?: boolean
  trashTtlMs?: number
  log: Logger
}

/** A finished upload, ready to be put in place. */
export interface StagedFile {
  /** Its name under `.sfm/tmp/`, to rename into place; null for an unnamed file, linked in by `fd`. */
  tmpPath: string | null
  /** The file, still open: its identity after the move is read from it. Required when unnamed. */
  fd?: number
  size: number
  contentId: Buffer
  manifest: Manifest
  mode: number
  mtimeNs: bigint
}

interface TrashItem {
  name: string
  node: MirrorNode
  expiresAt: number
  /** The wire path it had, so RENAME can restore it [M-RENAME-2]. */
  formerPath: string | null
}

/** What an operation changed, so the applier can flush it: directories whose entries changed. */
export type Touched = Set<string>

/**
 * Where linkUnnamedFile() leaves a new file's inode number and ctime after its link: read there, they
 * cost no fstatSync of its own (about 1 us here, and a BigInt Stats object to collect, per file).
 */
const LINKED_IDENTITY = new BigInt64Array(2)

export class Mirror {
  readonly catalog = new Catalog()
  readonly trash = new Catalog(newDir('', 0o700, 0n))
  readonly index: ContentIndex
  readonly sfmDir: string
  readonly tmpDir: string
  readonly trashDir: string
  mirrorId: Buffer = Buffer.alloc(16)

  private readonly journal: Journal
  private readonly trashItems = new Map<string, TrashItem>()
  private readonly trashByPath = new Map<string, TrashItem>()
  private readonly trashTtlMs: number
  private seq = 0
  /** Parents guardPath() found to be real directories on disk in this batch. */
  private readonly checkedDirs = new Set<string>()
  private trashTimer: NodeJS.Timeout | null = null
  /** Whether the file system would take a name other than `.sfm` for `.sfm` (case folding, trailing dots). */
  private foldsNames = false
  private readonly lockFile: PidLock
  /** `.sfm/`, open for flushAll() once it has run. */
  private flushHandle: Promise<FileHandle> | null = null

  private constructor(
    readonly root: string,
    private readonly log: Logger,
    trashTtlMs: number,
    indexLimits: IndexLimits,
  ) {
    this.index = new ContentIndex(indexLimits, (file) => this.catalog.contains(file))
    this.sfmDir = join(root, SFM_DIR)
    this.tmpDir = join(this.sfmDir, 'tmp')
    this.trashDir = join(this.sfmDir, 'trash')
    this.lockFile = new PidLock(join(this.sfmDir, 'lock'))
    this.journal = new Journal(join(this.sfmDir, 'journal'))
    this.trashTtlMs = trashTtlMs
  }

  static async open(opts: MirrorOptions): Promise<Mirror> {
    const m = new Mirror(opts.root, opts.log, opts.trashTtlMs ?? DEFAULT_TRASH_TTL_MS, opts.index ?? {})
    await m.prepareFolder(opts.adopt ?? false)
    await m.lock()
    await m.load()
    m.trashTimer = setInterval(() => void m.expireTrash(), Math.min(m.trashTtlMs, 10_000))
    m.trashTimer.unref()
    return m
  }

  async close(): Promise<void> {
    if (this.trashTimer) clearInterval(this.trashTimer)
    const flushHandle = this.flushHandle
    this.flushHandle = null
    await flushHandle?.then((fh) => fh.close(), () => undefined)
    await this.journal.close()
    await this.lockFile.release()
  }

  // ------------------------------------------------------------------------------------------
  // Start-up

  private async prepareFolder(adopt: boolean): Promise<void> {
    let names: string[]
    try {
      names = await readdir(this.root)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT') {
        await mkdir(this.root, { recursive: true }).catch((e: unknown) => {
          throw new FatalError(`cannot create ${this.root}: ${(e as Error).message}`, EXIT.ENVIRONMENT)
        })
        names = []
      } else if (code === 'ENOTDIR') {
        throw new FatalError(`${this.root} is not a directory`, EXIT.ENVIRONMENT)
      } else {
        throw new FatalError(`cannot read ${this.root}: ${(err as Error).message}`, EXIT.ENVIRONMENT)
      }
    }
    if (!names.includes(SFM_DIR) && names.length > 0 && !adopt) {
      throw new FatalError(
        `${this.root} is not empty and is not an sfm mirror; use an empty folder, or --adopt to reuse its content ` +
          `(files the client does not have will be deleted)`,
        EXIT.ENVIRONMENT,
      )
    }
    for (const dir of [this.sfmDir, this.tmpDir, this.trashDir]) await mkdir(dir, { recursive: true })
    this.foldsNames = sameInode(this.sfmDir, [join(this.root, '.SFM'), join(this.root, '.sfm.'), join(this.root, '.sfm ')])
    const idPath = join(this.sfmDir, 'mirror-id')
    try {
      this.mirrorId = Buffer.from((await readFile(idPath, 'utf8')).trim(), 'hex')
      if (this.mirrorId.length !== 16) throw new Error('bad mirror id')
    } catch {
      this.mirrorId = randomBytes(16)
      await writeFile(idPath, this.mirrorId.toString('hex') + '\n')
    }
  }

  private async lock(): Promise<void> {
    try {
      await this.lockFile.acquire()
    } catch (err) {
      if (!(err instanceof LockHeld)) throw err
      throw new FatalError(`another sfmd (pid ${err.pid}) is serving ${this.root}`, EXIT.ENVIRONMENT)
    }
  }

  /** Builds the catalog from the disk and the index from the journal, reading files it cannot trust. */
  private async load(): Promise<void> {
    // Leftovers of a server that was killed: half-written uploads and expired grace copies.
    for (const dir of [this.tmpDir, this.trashDir]) {
      for (const name of await readdir(dir)) await removeTree(join(dir, name), this.trashDir)
    }
    const entries = await scanTree(this.root, { onWarning: (msg) => this.log.warn(msg), isIgnored: (p) => p === SFM_DIR })
    const records = new Map<bigint, JournalRecord[]>()
    for (const r of await this.journal.load()) {
      const list = records.get(r.ino)
      if (list) list.push(r)
      else records.set(r.ino, [r])
    }
    const paths = [...entries.keys()].sort((a, b) => depth(a) - depth(b))
    let reread = 0
    let rereadBytes = 0
    for (const path of paths) {
      const e = entries.get(path)!
      const place = this.catalog.parentOf(path)
      if ('blocker' in place || place.missing.length > 0) continue // below something we skipped
      const name = path.slice(path.lastIndexOf('/') + 1)
      if (e.kind === 'dir') {
        this.catalog.attach(place.dir, name, newDir(name, appliedMode('dir', e.mode), e.mtimeNs))
      } else if (e.kind === 'symlink') {
        this.catalog.attach(place.dir, name, { kind: 'symlink', name, parent: null, mode: 0, mtimeNs: e.mtimeNs, target: e.target! })
      } else {
        let rec = records.get(e.ino)?.find((r) => r.size === e.size && r.mtimeNs === e.mtimeNs && r.ctimeNs === e.ctimeNs)
        if (!rec) {
          const d = await this.digestOnDisk(path, e)
          if (!d) continue
          rec = d
          reread++
          rereadBytes += e.size
        }
        const file: FileNode = {
          kind: 'file',
          name,
          parent: null,
          mode: appliedMode('file', e.mode),
          mtimeNs: e.mtimeNs,
          size: e.size,
          contentId: rec.contentId,
          manifest: { ids: rec.ids, lengths: rec.lengths },
          ino: e.ino,
          ctimeNs: e.ctimeNs,
        }
        this.catalog.attach(place.dir, name, file)
        this.index.addFile(file)
      }
    }
    if (reread > 0) this.log.info('indexed files the journal did not cover', { files: reread, bytes: rereadBytes })
    await this.journal.rewrite(this.journalRecords())
  }

  private async digestOnDisk(path: string, e: LocalEntry): Promise<JournalRecord | null> {
    try {
      const d = await digestFile(join(this.root, path))
      if (!sameIdentity(d.statBefore, d.statAfter) || d.statBefore.ctimeNs !== e.ctimeNs) return null // changing now: not indexed
      return { ino: e.ino, size: d.size, mtimeNs: e.mtimeNs, ctimeNs: e.ctimeNs, contentId: d.contentId, ids: d.ids, lengths: Uint32Array.from(d.lengths) }
    } catch (err) {
      this.log.warn(`cannot read ${path}: ${(err as Error).message}`)
      return null
    }
  }

  private *journalRecords(): Generator<JournalRecord> {
    for (const file of Catalog.files(this.catalog.top)) yield recordOf(file)
  }

  // ------------------------------------------------------------------------------------------
  // Reading

  /** Every entry of the mirror, for LISTING. */
  *listing(): Generator<ListEntry> {
    for (const [path, node] of this.catalog.walk()) {
      switch (node.kind) {
        case 'file':
          yield { kind: 'file', path, mode: node.mode, mtimeNs: node.mtimeNs, size: node.size, contentId: node.contentId }
          break
        case 'dir':
          yield { kind: 'dir', path, mode: node.mode, mtimeNs: node.mtimeStale ? this.refreshDirMtime(path, node) : node.mtimeNs }
          break
        case 'symlink':
          yield { kind: 'symlink', path, mode: 0, mtimeNs: node.mtimeNs, target: node.target }
      }
    }
  }

  /** The mirror digest (PROTOCOL.md 5.5) of what listing() would send now. */
  digest(): Buffer {
    const d = new MirrorDigest()
    for (const e of this.listing()) d.add(e)
    return d.value()
  }

  private refreshDirMtime(path: string, dir: DirNode): bigint {
    try {
      dir.mtimeNs = lstatSyncBig(join(this.root, path)).mtimeNs
      dir.mtimeStale = false
    } catch {
      // leave the model's value; the client will set it again
    }
    return dir.mtimeNs
  }

  /** The absolute path of a node in the mirror or in the trash, or null if it is gone. */
  absPathOf(node: MirrorNode): string | null {
    const inMirror = this.catalog.pathOf(node)
    if (inMirror !== null) return join(this.root, inMirror)
    const inTrash = this.trash.pathOf(node)
    if (inTrash !== null) return join(this.trashDir, inTrash)
    return null
  }

  /** Drops a file whose bytes on disk no longer match its manifest from the index. */
  forgetStale(file: FileNode): void {
    this.log.warn('a mirror file changed behind the server; its content will not be reused', {
      path: this.absPathOf(file) ?? '(gone)',
    })
    this.index.removeFile(file)
  }

  newTempPath(prefix: string): string {
    return join(this.tmpDir, `${prefix}-${process.pid}-${++this.seq}`)
  }

  // ------------------------------------------------------------------------------------------
  // Changes. The applier calls these one at a time, in the order the client sent them [M-SEM-4].

  /**
   * Starts a batch of changes: the parents guardPath() checked on disk are checked again. Within a
   * batch each parent is checked once, not once per file: a burst of a thousand files in one folder
   * costs one lstat, not a thousand.
   */
  startBatch(): void {
    this.checkedDirs.clear()
  }

  /**
   * Refuses a path the file system would resolve into `.sfm/` [M-PATH-2], or whose parents on disk are
   * not real directories [M-SEM-6]. The catalog already knows every symlink the server made; checking
   * the disk too catches a directory swapped for a symlink behind the server's back (one lstat per
   * parent and batch, served from the kernel's dentry cache). Such a swap can happen between the check
   * and the use in any case; the batch only makes that window a few milliseconds wider.
   */
  private guardPath(path: string): void {
    let dir = ''
    for (const name of path.split('/').slice(0, -1)) {
      dir = dir ? `${dir}/${name}` : name
      if (this.checkedDirs.has(dir)) continue
      let isDir: boolean
      try {
        isDir = lstatSync(join(this.root, dir)).isDirectory()
      } catch {
        break // missing: ensureParent creates it, as a real directory
      }
      if (!isDir) {
        this.log.warn(`${dir} in the mirror is not a directory on disk (changed behind the server's back)`)
        throw new MirrorError('SFM_ERR_NOT_DIR', `${dir} is not a directory`)
      }
      this.checkedDirs.add(dir)
    }
    if (!this.foldsNames) return
    const first = path.split('/', 1)[0]!.toLowerCase().replace(/[. ]+$/, '')
    if (first === SFM_DIR) {
      throw new MirrorError('SFM_ERR_INVALID', `${JSON.stringify(path)} names the server's own state on this file system`)
    }
  }

  async commitFile(path: string, staged: StagedFile): Promise<Touched> {
    this.guardPath(path)
    const touched: Touched = new Set()
    const dir = await this.ensureParent(path, touched)
    const name = leaf(path)
    const abs = join(this.root, path)
    const old = dir.children.get(name)
    if (old?.kind === 'dir') await this.moveToTrash(path, old, touched)
    else if (old) await this.keepCopyInTrash(path, old, abs, touched)
    let identified = false
    try {
      if (staged.tmpPath !== null) renameSync(staged.tmpPath, abs)
      else identified = this.linkIntoPlace(staged.fd!, abs, old !== undefined && old.kind !== 'dir')
    } catch (err) {
      throw fromFsError(err, path)
    }
    // the old version kept in the trash lost a link just now, which moved its ctime
    if (old?.kind === 'file' && old.parent === this.trash.top) this.refreshIdentity(old, join(this.trashDir, old.name))
    const file: FileNode = {
      kind: 'file',
      name,
      parent: null,
      mode: appliedMode('file', staged.mode),
      mtimeNs: staged.mtimeNs,
      size: staged.size,
      contentId: staged.contentId,
      manifest: staged.manifest,
      ino: 0n,
      ctimeNs: 0n,
    }
    // the rename or link itself moved the ctime
    if (identified) {
      file.ino = BigInt.asUintN(64, LINKED_IDENTITY[0]!)
      file.ctimeNs = LINKED_IDENTITY[1]!
    } else if (staged.fd === undefined) this.refreshIdentity(file, abs)
    else this.readIdentity(file, staged.fd)
    const replaced = this.catalog.attach(dir, name, file)
    if (replaced?.kind === 'file' && replaced.parent === null) this.index.removeFile(replaced)
    this.index.addFile(file)
    this.journal.append(recordOf(file))
    this.markChanged(dir, abs, touched)
    return touched
  }

  /**
   * Names an unnamed upload `abs`. A name that is taken (a file being replaced, or an entry the
   * catalog does not know) is replaced atomically, as a rename does: the file is linked under .sfm/tmp
   * and renamed over it. True when LINKED_IDENTITY holds the file's identity after it (a new name).
   */
  private linkIntoPlace(fd: number, abs: string, taken: boolean): boolean {
    if (!taken) {
      try {
        linkUnnamedFile(fd, abs, LINKED_IDENTITY)
        return true
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      }
    }
    const tmp = this.newTempPath('upload')
    linkUnnamedFile(fd, tmp)
    try {
      renameSync(tmp, abs)
    } catch (err) {
      rmSync(tmp, { force: true })
      throw err
    }
    return false
  }

  async delete(path: string): Promise<Touched> {
    this.guardPath(path)
    const touched: Touched = new Set()
    const node = this.catalog.get(path)
    if (!node) return touched // [M-DELETE-1]
    const parent = node.parent!
    await this.moveToTrash(path, node, touched)
    this.markChanged(parent, join(this.root, path), touched)
    return touched
  }

  async mkdir(path: string, mode: number, mtimeNs: bigint): Promise<Touched> {
    this.guardPath(path)
    const touched: Touched = new Set()
    const dir = await this.ensureParent(path, touched)
    const name = leaf(path)
    const abs = join(this.root, path)
    const old = dir.children.get(name)
    if (old?.kind === 'dir') {
      await this.setDirAttrs(abs, old, mode, mtimeNs)
      touched.add(abs)
      return touched
    }
    if (old) await this.moveToTrash(path, old, touched)
    try {
      mkdirSync(abs, { mode: appliedMode('dir', mode) })
    } catch (err) {
      throw fromFsError(err, path)
    }
    const node = newDir(name, appliedMode('dir', mode), mtimeNs)
    this.catalog.attach(dir, name, node)
    await this.setDirAttrs(abs, node, mode, mtimeNs)
    this.markChanged(dir, abs, touched)
    return touched
  }

  async symlink(path: string, target: string, mtimeNs: bigint): Promise<Touched> {
    this.guardPath(path)
    const touched: Touched = new Set()
    const dir = await this.ensureParent(path, touched)
    const name = leaf(path)
    const abs = join(this.root, path)
    const tmp = this.newTempPath('symlink')
    try {
      symlinkSync(target, tmp)
      setMtimeNs(tmp, mtimeNs, { noFollow: true })
      const old = dir.children.get(name)
      if (old?.kind === 'dir') await this.moveToTrash(path, old, touched)
      renameSync(tmp, abs)
    } catch (err) {
      rmSync(tmp, { force: true })
      throw fromFsError(err, path)
    }
    const replaced = this.catalog.attach(dir, name, { kind: 'symlink', name, parent: null, mode: 0, mtimeNs, target })
    if (replaced?.kind === 'file') this.index.removeFile(replaced)
    this.markChanged(dir, abs, touched)
    return touched
  }

  async rename(from: string, to: string): Promise<Touched> {
    if (isSameOrBelow(to, from)) throw new MirrorError('SFM_ERR_INVALID', `cannot move ${from} into itself`) // [M-RENAME-3]
    this.guardPath(from)
    this.guardPath(to)
    const touched: Touched = new Set()
    let node = this.catalog.get(from)
    let srcAbs = join(this.root, from)
    const restoring = node ? undefined : this.trashByPath.get(from)
    if (!node) {
      if (!restoring) throw new MirrorError('SFM_ERR_NOT_FOUND', `${from} does not exist`)
      node = restoring.node
      srcAbs = join(this.trashDir, restoring.name)
    }
    // [M-RENAME-4] every path below must stay a valid wire path, and one the kernel can open below the root
    const deepest = Buffer.byteLength(to) + Catalog.deepestBelow(node)
    if (deepest > MAX_PATH_BYTES || Buffer.byteLength(this.root) + 1 + deepest > MAX_PATH_BYTES) {
      throw new MirrorError('SFM_ERR_INVALID', `moving ${from} to ${to} would make paths below it ${deepest} bytes long`)
    }
    const fromDir = node.parent!
    const dir = await this.ensureParent(to, touched)
    const name = leaf(to)
    const abs = join(this.root, to)
    const old = dir.children.get(name)
    if (old && (old.kind === 'dir' || node.kind === 'dir')) await this.moveToTrash(to, old, touched)
    else if (old) await this.keepCopyInTrash(to, old, abs, touched)
    try {
      renameSync(srcAbs, abs)
    } catch (err) {
      throw fromFsError(err, `${from} -> ${to}`)
    }
    if (restoring) {
      this.forgetTrashItem(restoring)
      touched.add(this.trashDir)
    } else this.markChanged(fromDir, srcAbs, touched)
    this.catalog.detach(node)
    const replaced = this.catalog.attach(dir, name, node)
    if (replaced) for (const file of Catalog.files(replaced)) this.index.removeFile(file)
    if (node.kind === 'file') {
      this.refreshIdentity(node, abs) // a renamed file's ctime moves; the files inside a renamed directory's do not
      this.journal.append(recordOf(node))
    }
    this.markChanged(dir, abs, touched)
    return touched
  }

  async setattr(path: string, mode: number, mtimeNs: bigint): Promise<Touched> {
    this.guardPath(path)
    const node = this.catalog.get(path)
    if (!node) throw new MirrorError('SFM_ERR_NOT_FOUND', `${path} does not exist`) // [M-SETATTR-1]
    const abs = join(this.root, path)
    try {
      if (node.kind === 'dir') await this.setDirAttrs(abs, node, mode, mtimeNs)
      else if (node.kind === 'file') {
        chmodSync(abs, appliedMode('file', mode))
        setMtimeNs(abs, mtimeNs, { noFollow: true })
        node.mode = appliedMode('file', mode)
        node.mtimeNs = mtimeNs
        // the journal keys records by mtime and ctime: a touched file needs a fresh record
        this.refreshIdentity(node, abs)
        this.journal.append(recordOf(node))
      } else {
        setMtimeNs(abs, mtimeNs, { noFollow: true })
        node.mtimeNs = mtimeNs
      }
    } catch (err) {
      throw fromFsError(err, path)
    }
    // The entry's own inode changed: flush it (for a symlink, its directory's flush carries it).
    return new Set([node.kind === 'symlink' ? join(this.root, parentPath(path)) : abs])
  }

  private async setDirAttrs(abs: string, dir: DirNode, mode: number, mtimeNs: bigint): Promise<void> {
    chmodSync(abs, appliedMode('dir', mode))
    setMtimeNs(abs, mtimeNs, { noFollow: true })
    dir.mode = appliedMode('dir', mode)
    dir.mtimeNs = mtimeNs
    dir.mtimeStale = false
  }

  /**
   * The directory that will hold `path`, creating missing ones. A parent that is a file or a symlink
   * in the model fails the request: the server never writes through a symlink [M-COMMIT-4][M-SEM-6].
   */
  private async ensureParent(path: string, touched: Touched): Promise<DirNode> {
    const place = this.catalog.parentOf(path)
    if ('blocker' in place) throw new MirrorError('SFM_ERR_NOT_DIR', `${place.blocker} is not a directory`)
    let dir = place.dir
    for (const name of place.missing) {
      const dirPath = this.catalog.pathOf(dir)
      const abs = join(this.root, dirPath ? `${dirPath}/${name}` : name)
      try {
        mkdirSync(abs, { mode: 0o755 })
      } catch (err) {
        throw fromFsError(err, abs)
      }
      const created = newDir(name, 0o755, 0n)
      created.mtimeStale = true
      this.catalog.attach(dir, name, created)
      this.markChanged(dir, abs, touched)
      dir = created
    }
    return dir
  }

  /** Records that `dir` gained or lost the entry at `childAbs`: its mtime moved, and it needs a flush. */
  private markChanged(dir: DirNode, childAbs: string, touched: Touched): void {
    dir.mtimeStale = true
    touched.add(childAbs.slice(0, childAbs.lastIndexOf('/')))
  }

  // ------------------------------------------------------------------------------------------
  // Trash: deleted and replaced entries, kept for the grace period (PROTOCOL.md 9.3).

  private async moveToTrash(path: string, node: MirrorNode, touched: Touched): Promise<void> {
    const item = this.newTrashItem(path, node)
    try {
      renameSync(join(this.root, path), join(this.trashDir, item.name))
    } catch (err) {
      throw fromFsError(err, path)
    }
    this.catalog.detach(node)
    this.trash.attach(this.trash.top, item.name, node)
    this.addTrashItem(item)
    if (node.kind === 'file') this.refreshIdentity(node, join(this.trashDir, item.name))
    touched.add(this.trashDir)
  }

  /** Keeps a file that is about to be replaced reachable from the trash, by a hard link. */
  private async keepCopyInTrash(path: string, node: MirrorNode, abs: string, touched: Touched): Promise<void> {
    if (node.kind !== 'file') return
    const item = this.newTrashItem(path, node)
    try {
      linkSync(abs, join(this.trashDir, item.name))
    } catch {
      return // only an optimisation: without the link the old bytes are simply not reusable
    }
    this.catalog.detach(node)
    this.trash.attach(this.trash.top, item.name, node)
    this.addTrashItem(item)
    this.refreshIdentity(node, join(this.trashDir, item.name)) // a new link moves the ctime
    touched.add(this.trashDir)
  }

  /**
   * Records the file's identity after the server itself changed it (rename, link, chmod): its
   * bytes are still the ones of its manifest, and from now on this is what "unchanged" looks like.
   */
  private refreshIdentity(file: FileNode, abs: string): void {
    this.recordIdentity(file, () => lstatSync(abs, { bigint: true }))
  }

  /** refreshIdentity for a file the server still has open: no path to resolve. */
  private readIdentity(file: FileNode, fd: number): void {
    this.recordIdentity(file, () => fstatSync(fd, { bigint: true }))
  }

  private recordIdentity(file: FileNode, stat: () => BigIntStats): void {
    try {
      const st = stat()
      file.ino = st.ino
      file.ctimeNs = st.ctimeNs
    } catch {
      file.ctimeNs = -1n // unknown: content will be verified by reading before any reuse
    }
  }

  private newTrashItem(path: string, node: MirrorNode): TrashItem {
    return { name: `${Date.now()}-${++this.seq}`, node, expiresAt: Date.now() + this.trashTtlMs, formerPath: path }
  }

  private addTrashItem(item: TrashItem): void {
    this.trashItems.set(item.name, item)
    if (item.formerPath !== null) this.trashByPath.set(item.formerPath, item)
  }

  private forgetTrashItem(item: TrashItem): void {
    this.trashItems.delete(item.name)
    if (item.formerPath !== null && this.trashByPath.get(item.formerPath) === item) this.trashByPath.delete(item.formerPath)
  }

  /** Removes trash items past their grace period, or all of them (when the disk is full). */
  async expireTrash(all = false): Promise<number> {
    const now = Date.now()
    let removed = 0
    for (const item of [...this.trashItems.values()]) {
      if (!all && item.expiresAt > now) continue
      // While this loop awaits a removal, a RENAME may bring an item back into the mirror: it is no
      // longer the trash's to remove (detaching it would drop a live tree from the catalog).
      if (this.trashItems.get(item.name) !== item) continue
      this.forgetTrashItem(item)
      for (const file of Catalog.files(item.node)) this.index.removeFile(file)
      this.trash.detach(item.node)
      await removeTree(join(this.trashDir, item.name), this.trashDir).catch((err: Error) =>
        this.log.warn(`cannot remove ${item.name} from the trash: ${err.message}`),
      )
      removed++
    }
    return removed
  }

  /** Whether flushAll() can flush the whole file system at once (the native addon is built). */
  get canFlushAll(): boolean {
    return nativeAvailable
  }

  /**
   * Flushes everything the file system of the mirror holds in memory, with one syncfs(2), through a
   * descriptor of `.sfm/` kept open: opening and closing one per flush cost more main-thread time than
   * the rest of the applier's flush step (benchmark W2, hundreds of flushes).
   */
  async flushAll(): Promise<void> {
    this.flushHandle ??= open(this.sfmDir, 'r')
    const fh = await this.flushHandle.catch((err: Error) => {
      this.flushHandle = null // tried again next time
      throw err
    })
    await syncFileSystem(fh.fd)
  }
}

function recordOf(file: FileNode): JournalRecord {
  return {
    ino: file.ino,
    size: file.size,
    mtimeNs: file.mtimeNs,
    ctimeNs: file.ctimeNs,
    contentId: file.contentId,
    ids: file.manifest.ids,
    lengths: file.manifest.lengths,
  }
}

/** Whether any of `aliases` resolves to the same inode as `path`. */
function sameInode(path: string, aliases: string[]): boolean {
  const st = lstatSync(path, { bigint: true })
  for (const alias of aliases) {
    try {
      const a = lstatSync(alias, { bigint: true })
      if (a.ino === st.ino && a.dev === st.dev) return true
    } catch {
      // no such name: this alias does not fold onto `.sfm`
    }
  }
  return false
}

function depth(path: string): number {
  let n = 0
  for (let i = 0; i < path.length; i++) if (path.charCodeAt(i) === 47) n++
  return n
}

function leaf(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1)
}

function parentPath(path: string): string {
  const i = path.lastIndexOf('/')
  return i < 0 ? '' : path.slice(0, i)
}

function lstatSyncBig(path: string) {
  return lstatSync(path, { bigint: true })
}
