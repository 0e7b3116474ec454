// A directory's entries with their lstat, in one call (src/native/sfm_folder.c): what the folder scan
// does for every directory. Optional like the other addon: null from listDirFunction() means the
// caller lists with readdir and lstat.
import { errnoError, folderBinding } from './folder-addon.js'

/** What lstat says of one entry, as the scan needs it. */
export interface EntryStat {
  /** st_mode: type and permission bits. */
  mode: number
  size: number
  ino: bigint
  mtimeNs: bigint
  ctimeNs: bigint
}

export interface ListedEntry {
  /** The name decoded as UTF-8 (U+FFFD for bytes that are not). */
  name: string
  /** The raw bytes of the name, only when `name` contains U+FFFD (to tell a real one from a bad byte). */
  rawName: Buffer | null
  /** The lstat of the entry, or why it failed (ENOENT: removed since the directory was read). */
  stat: EntryStat | NodeJS.ErrnoException
}

export type ListDir = (path: string, opts: { noFollow: boolean }) => Promise<ListedEntry[]>

const STAT_BYTES = 44
const TWO_32 = 2 ** 32

/** Lists `path` (following it if it is a symlink, unless noFollow) and lstats each entry. */
async function listDir(path: string, opts: { noFollow: boolean }): Promise<ListedEntry[]> {
  const buf = await folderBinding!.listDir(path, opts.noFollow)
  const failed = buf.readInt32LE(0)
  if (failed !== 0) throw errnoError(failed, 'scandir', path)
  const entries: ListedEntry[] = []
  for (let at = 4; at < buf.length; ) {
    const nameLength = buf.readUInt16LE(at)
    const nameStart = at + 2
    at = nameStart + nameLength
    const name = buf.toString('utf8', nameStart, at)
    const rawName = name.includes('\uFFFD') ? Buffer.from(buf.subarray(nameStart, at)) : null
    const err = buf.readInt32LE(at)
    at += 4
    if (err !== 0) {
      entries.push({ name, rawName, stat: errnoError(err, 'lstat', `${path}/${name}`) })
      continue
    }
    entries.push({
      name,
      rawName,
      stat: {
        mode: buf.readUInt32LE(at),
        size: buf.readUInt32LE(at + 4) + buf.readUInt32LE(at + 8) * TWO_32,
        ino: buf.readBigUInt64LE(at + 12),
        mtimeNs: buf.readBigInt64LE(at + 28),
        ctimeNs: buf.readBigInt64LE(at + 36),
      },
    })
    at += STAT_BYTES
  }
  return entries
}

/** The native lister, or null when the addon is not built. */
export function listDirFunction(): ListDir | null {
  return folderBinding === undefined ? null : listDir
}
