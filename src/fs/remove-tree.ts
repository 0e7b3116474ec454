// Removes a tree that may hold paths longer than PATH_MAX. A directory deleted on the mirror moves into
// .sfm/trash/<item>: everything in it gets a longer prefix, so a tree that fit below the root can pass
// the 4,095 bytes the kernel accepts in one path, where fs.rm fails with ENAMETOOLONG (and, being
// parallel inside, leaves removals of its own still running after it has failed).

import { randomBytes } from 'node:crypto'
import { lstat, readdir, rename, rmdir, unlink } from 'node:fs/promises'
import { join } from 'node:path'

const PATH_MAX = 4_096
/** The longest directory path whose entries can all be named: room for '/', a 255-byte name and the NUL. */
const DEEPEST_DIR_BYTES = PATH_MAX - 1 - 255 - 1
/** Unlinks in flight at once within one directory. */
const PARALLEL_UNLINKS = 32

/**
 * Removes `path` and everything below it; a missing `path` is not an error. `spareDir` is a short
 * directory on the same file system: a directory too deep to name its entries is renamed into it first.
 */
export async function removeTree(path: string, spareDir: string): Promise<void> {
  let st
  try {
    st = await lstat(path) // never readdir() first: it follows a symlink, to anywhere
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
    throw err
  }
  if (st.isDirectory()) await removeDir(path, spareDir)
  else await ignoreMissing(unlink(path))
}

/** Removes a directory known to be one (from lstat, or from its parent's listing). */
async function removeDir(path: string, spareDir: string): Promise<void> {
  if (Buffer.byteLength(path) > DEEPEST_DIR_BYTES) {
    // its own path still fits (its parent's did, with room for one name): give it a short one
    const spare = join(spareDir, `.deep-${randomBytes(6).toString('hex')}`)
    if (!(await ignoreMissing(rename(path, spare)))) return
    path = spare
  }
  let entries
  try {
    entries = await readdir(path, { withFileTypes: true })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
    throw err
  }
  const files: string[] = []
  for (const e of entries) {
    if (e.isDirectory()) await removeDir(join(path, e.name), spareDir) // d_type: a symlink is not a directory
    else files.push(join(path, e.name))
  }
  for (let i = 0; i < files.length; i += PARALLEL_UNLINKS) {
    await Promise.all(files.slice(i, i + PARALLEL_UNLINKS).map((f) => ignoreMissing(unlink(f))))
  }
  await ignoreMissing(rmdir(path))
}

/** Whether `op` did its work; false if what it worked on was already gone. */
async function ignoreMissing(op: Promise<void>): Promise<boolean> {
  try {
    await op
    return true
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false
    throw err
  }
}
