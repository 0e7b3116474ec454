// Guards against the worst mirror incidents (rsync --delete, lsyncd and Syncthing have all deleted
// whole backups this way): a folder that was replaced or unmounted, an empty folder over a full mirror,
// and a mass delete. Each guard holds changes back with a clear message and lets them go by itself
// once the reason is gone (the folder comes back); an explicit flag overrides it.
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { EXIT, FatalError } from '../fatal.js'
import { rootIdentity, sameRoot, type RootIdentity } from './scan.js'

/** How many entries one pass may delete from the mirror before its deletes are held back. */
export type DeleteLimit = { kind: 'count'; n: number } | { kind: 'percent'; p: number } | { kind: 'none' }

export const DEFAULT_DELETE_LIMIT: DeleteLimit = { kind: 'percent', p: 50 }
/** Deleting this many entries or fewer is never held back, whatever the percentage says. */
export const ALWAYS_ALLOWED_DELETES = 20

/** `N`, `P%` or `all` (no limit). */
export function parseDeleteLimit(text: string): DeleteLimit | null {
  if (text === 'all') return { kind: 'none' }
  const pct = /^(\d{1,3})%$/.exec(text)
  if (pct && Number(pct[1]) <= 100) return { kind: 'percent', p: Number(pct[1]) }
  if (/^\d{1,12}$/.test(text)) return { kind: 'count', n: Number(text) }
  return null
}

export function describeLimit(limit: DeleteLimit): string {
  return limit.kind === 'none' ? 'all' : limit.kind === 'count' ? String(limit.n) : `${limit.p}%`
}

/** Whether deleting `deleting` of the mirror's `total` entries in one pass goes over the limit. */
export function overLimit(limit: DeleteLimit, deleting: number, total: number): boolean {
  if (limit.kind === 'none' || deleting <= ALWAYS_ALLOWED_DELETES) return false
  if (limit.kind === 'count') return deleting > limit.n
  return deleting * 100 > total * limit.p
}

/** Changes held back by a guard: --once exits with this; watch mode waits for the reason to go. */
export class HeldBack extends FatalError {
  constructor(message: string) {
    super(message, EXIT.HELD)
    this.name = 'HeldBack'
  }
}

/** Where the client remembers which folder it mirrors: $SFM_STATE_DIR, systemd's, or XDG's. */
export function defaultStateDir(env: NodeJS.ProcessEnv): string {
  if (env['SFM_STATE_DIR']) return env['SFM_STATE_DIR']
  if (env['STATE_DIRECTORY']) return env['STATE_DIRECTORY'].split(':')[0]!
  return join(env['XDG_STATE_HOME'] || join(homedir(), '.local', 'state'), 'sfm')
}

interface SavedRoot {
  root: string
  dev: string
  ino: string
  birthtimeNs: string
}

/**
 * The identity (device, inode, birth time) of the folder this client mirrored last time, kept in the
 * state directory under the client's id. A different folder at the same path (a disk not mounted, a
 * folder deleted and made again) is refused until the original is back, or the user accepts it.
 */
export class RootRecord {
  private readonly file: string

  constructor(stateDir: string, clientId: Buffer) {
    this.file = join(stateDir, `root-${clientId.toString('hex').slice(0, 16)}.json`)
  }

  async load(): Promise<RootIdentity | null> {
    try {
      const s = JSON.parse(await readFile(this.file, 'utf8')) as SavedRoot
      return { dev: BigInt(s.dev), ino: BigInt(s.ino), birthtimeNs: BigInt(s.birthtimeNs) }
    } catch {
      return null
    }
  }

  async save(root: string, id: RootIdentity): Promise<void> {
    const s: SavedRoot = { root, dev: String(id.dev), ino: String(id.ino), birthtimeNs: String(id.birthtimeNs) }
    await mkdir(join(this.file, '..'), { recursive: true })
    await writeFile(`${this.file}.tmp`, JSON.stringify(s) + '\n')
    await rename(`${this.file}.tmp`, this.file)
  }
}

/**
 * Checks that `root` is the folder recorded last time. Resolves when it is (at once, or after waiting
 * for it to come back: a disk mounted again), throws HeldBack when `wait` is false, and records the
 * folder when there is no record yet or `accept` says a new one is wanted.
 */
export async function checkRootIdentity(opts: {
  root: string
  record: RootRecord | null
  accept: boolean
  wait: boolean
  onWaiting: (message: string) => void
  stopped: () => boolean
  pollMs?: number
}): Promise<void> {
  const { root, record } = opts
  if (!record) return
  const saved = await record.load()
  let now = await rootIdentity(root)
  if (saved && !sameRoot(saved, now) && !opts.accept) {
    const message =
      `${root} is not the folder this client mirrored before (another device, inode or creation time: ` +
      `an unmounted disk, or a folder made again); nothing is synced until it comes back. If the change ` +
      `is intended, start once with --accept-new-root`
    if (!opts.wait) throw new HeldBack(message)
    opts.onWaiting(message)
    while (!opts.stopped()) {
      await new Promise((r) => setTimeout(r, opts.pollMs ?? 2_000))
      try {
        now = await rootIdentity(root)
        if (sameRoot(saved, now)) break
      } catch {
        // not there at all right now: keep waiting
      }
    }
    if (opts.stopped()) return
  }
  await record.save(root, now).catch(() => {}) // without a writable state dir the check is simply skipped next time
}
