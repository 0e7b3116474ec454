// Applies the client's changes to the mirror in the order they arrived [M-SEM-4], in batches that share
// their disk flushes [M-SEM-5]: every change that is ready while the previous batch is flushing goes
// into the next one, so a burst of small files costs a few flushes, not one per file.
import { open } from 'node:fs/promises'
import type { Logger } from '../log.js'
import type { Change, List } from '../protocol/messages.js'
import { MirrorError, fromFsError } from './mirror-error.js'
import type { Mirror, StagedFile, Touched } from './mirror.js'
import type { Upload } from './upload.js'

const MAX_BATCH = 512
/**
 * From this many files in a batch, one syncfs(2) of the mirror's file system flushes them all (before
 * the renames) and one more flushes the directories (after): a burst of small files then costs two
 * disk flushes per batch, not two per file. Below it, each file and directory is flushed on its own,
 * which touches only what changed.
 */
const GROUP_FLUSH_FILES = 4
const GROUP_FLUSH_PATHS = 16

export type Outcome = { ok: true } | { ok: false; error: MirrorError }

export interface QueuedChange {
  change: Change
  /** For a COMMIT: the upload holding its bytes. */
  upload?: Upload
  done: (outcome: Outcome) => void
}

export interface QueuedList {
  change: List
  done: (outcome: Outcome) => void
}

type Queued = QueuedChange | QueuedList

export class Applier {
  private readonly queue: Queued[] = []
  private running: Promise<void> | null = null

  constructor(
    private readonly mirror: Mirror,
    /** Changes are flushed to disk before they are confirmed (sfmd without --no-fsync). */
    readonly fsync: boolean,
    private readonly log: Logger,
  ) {}

  /** Queues a change, or a LIST that must see every change queued before it. */
  enqueue(item: Queued): void {
    this.queue.push(item)
    this.running ??= this.run().finally(() => {
      this.running = null
    })
  }

  /** Resolves when everything queued so far is applied and answered. */
  async idle(): Promise<void> {
    while (this.running) await this.running
  }

  private async run(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, MAX_BATCH)
      await this.applyBatch(batch)
    }
  }

  private async applyBatch(batch: Queued[]): Promise<void> {
    const t0 = performance.now()
    this.mirror.startBatch()
    // 1. Finish the data of every upload in the batch and flush it: each file, or all with one syncfs.
    const commits = batch.filter((item) => item.change.type === 'commit').length
    const grouped = this.fsync && commits >= GROUP_FLUSH_FILES && this.mirror.canFlushAll
    const staged = await Promise.all(
      batch.map((item) =>
        item.change.type === 'commit' ? stage(item as QueuedChange, this.fsync && !grouped) : Promise.resolve(null),
      ),
    )
    if (grouped) {
      const failed = await this.mirror.flushAll().then(() => null, (err: Error) => err)
      if (failed) {
        this.log.error(`cannot flush the mirror: ${failed.message}`)
        staged.forEach((s, i) => {
          if (s && !(s instanceof MirrorError)) staged[i] = fromFsError(failed, 'flush')
        })
      }
    }
    const t1 = performance.now()
    // 2. Apply in order.
    const outcomes: Outcome[] = []
    const touched: Touched = new Set()
    for (let i = 0; i < batch.length; i++) {
      const item = batch[i]!
      const s = staged[i]
      let error = s instanceof MirrorError ? s : null // failed while staged
      if (!error) {
        try {
          for (const dir of await this.apply(item, s)) touched.add(dir)
        } catch (err) {
          error = fromFsError(err, describe(item))
        }
      }
      // a staged upload holds its file open until it is in place, or dropped
      const upload = (item as QueuedChange).upload
      if (!error) {
        upload?.release()
        outcomes.push({ ok: true })
        continue
      }
      if (s) await upload?.discard()
      // a full disk, while staging or applying: what the trash keeps is the room a retry needs
      if (error.code === 'SFM_ERR_NO_SPACE') await this.mirror.expireTrash(true)
      outcomes.push({ ok: false, error })
    }
    // 3. Flush the directories whose entries changed, then answer, in order.
    const t2 = performance.now()
    if (this.fsync && touched.size > 0) {
      const all = (grouped || touched.size >= GROUP_FLUSH_PATHS) && this.mirror.canFlushAll
      const failed = all ? await this.mirror.flushAll().then(() => null, (err: Error) => err) : await flushPaths(touched)
      if (failed) {
        this.log.error(`cannot flush the mirror: ${failed.message}`)
        for (let i = 0; i < outcomes.length; i++) {
          if (outcomes[i]!.ok) outcomes[i] = { ok: false, error: fromFsError(failed, 'flush') }
        }
      }
    }
    batch.forEach((item, i) => item.done(outcomes[i]!))
    const ms = (a: number, b: number) => Math.round(b - a)
    this.log.debug('applied a batch', { changes: batch.length, grouped, stageMs: ms(t0, t1), applyMs: ms(t1, t2), flushMs: ms(t2, performance.now()) })
  }

  private async apply(item: Queued, staged: StagedFile | null | MirrorError): Promise<Touched> {
    const m = this.mirror
    const c = item.change
    switch (c.type) {
      case 'commit':
        return m.commitFile(c.path, staged as StagedFile)
      case 'delete':
        return m.delete(c.path)
      case 'mkdir':
        return m.mkdir(c.path, c.mode, c.mtimeNs)
      case 'symlink':
        return m.symlink(c.path, c.target, c.mtimeNs)
      case 'rename':
        return m.rename(c.from, c.to)
      case 'setattr':
        return m.setattr(c.path, c.mode, c.mtimeNs)
      case 'list':
        return new Set() // the session builds the listing when `done` runs: after every earlier change
      default: {
        const never: never = c
        throw new Error(`cannot apply ${(never as Change).type}`)
      }
    }
  }
}

async function stage(item: QueuedChange, fsync: boolean): Promise<StagedFile | MirrorError> {
  if (item.change.type !== 'commit' || !item.upload) return new MirrorError('SFM_ERR_IO', 'commit without upload')
  try {
    return await item.upload.stage(item.change, fsync)
  } catch (err) {
    await item.upload.discard()
    return err instanceof MirrorError ? err : fromFsError(err, item.change.path)
  }
}

/**
 * fsync every path (directories whose entries changed, entries whose attributes changed), concurrently:
 * the file system merges concurrent flushes into few journal commits.
 */
async function flushPaths(paths: Iterable<string>): Promise<Error | null> {
  const results = await Promise.allSettled(
    [...paths].map(async (path) => {
      const fh = await open(path, 'r')
      try {
        await fh.sync()
      } finally {
        await fh.close()
      }
    }),
  )
  for (const r of results) {
    // gone since (a later change in the batch removed it), or unreadable to us (a file of mode 000,
    // whose attributes the next flush of its directory's file system carries anyway)
    const code = r.status === 'rejected' ? (r.reason as NodeJS.ErrnoException).code : undefined
    if (r.status === 'rejected' && code !== 'ENOENT' && code !== 'EACCES') return r.reason as Error
  }
  return null
}

function describe(item: Queued): string {
  const c = item.change
  return c.type === 'rename' ? `${c.from} -> ${c.to}` : 'path' in c ? c.path : c.type
}
