// Exact mtimes, whole-file-system sync, in-kernel, cloned and direct copies, and unnamed files through
// the optional addon in src/native/, with portable fallbacks when it was not built
// (scripts/build-native.mjs says so at install time).
import fs from 'node:fs'
import { createRequire } from 'node:module'
import util from 'node:util'

interface Binding {
  utimesNs(path: string, sec: bigint, nsec: number, noFollow: boolean): void
  futimesNs(fd: number, sec: bigint, nsec: number): void
  syncfs(fd: number): Promise<void>
  copyFileRange(fdIn: number, offIn: number, fdOut: number, offOut: number, length: number): Promise<number>
  copyDirect(fdIn: number, offIn: number, fdOut: number, offOut: number, length: number): Promise<number>
  cloneRange(fdIn: number, offIn: number, fdOut: number, offOut: number, length: number): Promise<number>
  writeDirect(fd: number, buffer: Buffer, length: number, offset: number): Promise<number>
  alignedBuffer(size: number): Buffer
  openTmpfile(dir: string, mode: number): number
  linkFd(fd: number, path: string, identity?: BigInt64Array): void
  createFiles(dir: string, data: Uint8Array[], modes: Int32Array, mtimes: BigInt64Array): Promise<void>
  readFiles(paths: string, out: Uint8Array, sizes: Int32Array, stats: BigInt64Array): Promise<void>
  closeFds(fds: Int32Array): Promise<void>
  trimMemory(): boolean
}

const NS_PER_SEC = 1_000_000_000n

// src/fs/native.ts and dist/fs/native.js both sit two levels below the repository root.
const ADDON_PATH = '../../build/Release/sfm_native.node'

const loadBinding = (): { binding?: Binding; error?: Error } => {
  try {
    return { binding: createRequire(import.meta.url)(ADDON_PATH) as Binding }
  } catch (err) {
    return { error: err as Error }
  }
}

const loaded = loadBinding()
const binding = loaded.binding

/** True when the addon loaded: mtimes are exact to the nanosecond and syncFileSystem works. */
export const nativeAvailable: boolean = binding !== undefined

/** Why the addon did not load (not built, or built for another Node ABI); for diagnostics. */
export const nativeLoadError: Error | undefined = loaded.error

/** Splits nanoseconds since the epoch into (sec, nsec) with 0 <= nsec < 1e9, flooring towards
 * minus infinity: -1n is (-1n, 999_999_999). BigInt `/` truncates towards zero, hence the fix-up. */
export const splitNs = (ns: bigint): { sec: bigint; nsec: number } => {
  let sec = ns / NS_PER_SEC
  let rem = ns % NS_PER_SEC
  if (rem < 0n) {
    sec -= 1n
    rem += NS_PER_SEC
  }
  return { sec, nsec: Number(rem) }
}

/**
 * Sets the mtime of `path` to exactly `mtimeNs` nanoseconds since the epoch, leaving atime as it
 * is. With `noFollow` a symlink's own mtime is set (dangling links too), never its target's.
 * Throws Node-style errors: branch on `.code` ('ENOENT', 'EACCES', ...).
 *
 * Without the addon this is exact only to the microsecond (see toLibuvTime) and atime is
 * rewritten to its current value rounded to the microsecond.
 */
export const setMtimeNs = (path: string, mtimeNs: bigint, opts: { noFollow: boolean }): void => {
  if (binding !== undefined) {
    const { sec, nsec } = splitNs(mtimeNs)
    binding.utimesNs(path, sec, nsec, opts.noFollow)
    return
  }
  if (opts.noFollow) {
    const atime = toLibuvTime(fs.lstatSync(path, { bigint: true }).atimeNs)
    fs.lutimesSync(path, atime, toLibuvTime(mtimeNs))
  } else {
    const atime = toLibuvTime(fs.statSync(path, { bigint: true }).atimeNs)
    fs.utimesSync(path, atime, toLibuvTime(mtimeNs))
  }
}

/** setMtimeNs for an open file descriptor (futimens(2)); same precision and fallback. */
export const setMtimeNsFd = (fd: number, mtimeNs: bigint): void => {
  if (binding !== undefined) {
    const { sec, nsec } = splitNs(mtimeNs)
    binding.futimesNs(fd, sec, nsec)
    return
  }
  const atime = toLibuvTime(fs.fstatSync(fd, { bigint: true }).atimeNs)
  fs.futimesSync(fd, atime, toLibuvTime(mtimeNs))
}

/**
 * Flushes the whole file system that `fd` lives on, as syncfs(2), off the event loop. Keep `fd`
 * open until the promise settles. Without the addon (or off Linux) it rejects with code 'ENOSYS':
 * the caller then fsyncs each file itself.
 */
export const syncFileSystem = (fd: number): Promise<void> => {
  if (binding !== undefined) return binding.syncfs(fd)
  const err = Object.assign(new Error('ENOSYS: syncfs is not available without the sfm addon'), {
    code: 'ENOSYS',
    syscall: 'syncfs',
  })
  return Promise.reject(err)
}

/**
 * Copies `length` bytes from one open file to another inside the kernel (copy_file_range(2)): the
 * bytes never pass through this process, and file systems that can share extents (XFS, Btrfs) clone
 * instead of copying. Resolves with the bytes copied (fewer if the source ended). Without the addon
 * it reads and writes in 1 MiB pieces.
 */
export const copyFileRange = async (fdIn: number, offIn: number, fdOut: number, offOut: number, length: number): Promise<number> => {
  if (binding !== undefined) return binding.copyFileRange(fdIn, offIn, fdOut, offOut, length)
  const buf = Buffer.allocUnsafe(Math.min(length, 1 << 20))
  let copied = 0
  while (copied < length) {
    const n = await new Promise<number>((resolve, reject) =>
      fs.read(fdIn, buf, 0, Math.min(buf.length, length - copied), offIn + copied, (err, bytes) => (err ? reject(err) : resolve(bytes))),
    )
    if (n === 0) break
    await new Promise<void>((resolve, reject) =>
      fs.write(fdOut, buf, 0, n, offOut + copied, (err) => (err ? reject(err) : resolve())),
    )
    copied += n
  }
  return copied
}

/** copyThrough's and writeThroughAt's destination offsets and lengths are multiples of this. */
export const DIRECT_IO_ALIGN = 4096

/** Bytes from `offset` to the next multiple of DIRECT_IO_ALIGN (0 if it is one). */
export const bytesToAlign = (offset: number): number => (DIRECT_IO_ALIGN - (offset % DIRECT_IO_ALIGN)) % DIRECT_IO_ALIGN

const checkAligned = (call: string, offset: number, length: number): void => {
  if (offset % DIRECT_IO_ALIGN !== 0 || length % DIRECT_IO_ALIGN !== 0) {
    throw new RangeError(`${call}: offset ${offset} and length ${length} must be multiples of ${DIRECT_IO_ALIGN}`)
  }
}

/** Set once direct I/O was refused (no addon, no O_DIRECT on the file system): not tried again. */
let directRefused = binding === undefined
/** Set once the file system refused to clone (ext4, tmpfs): not tried again. */
let cloneRefused = binding === undefined

/**
 * Copies a big range into a file that will be flushed before it counts anyway. Where the file system
 * shares blocks between files (XFS, Btrfs) and the source offset is aligned too, the range is cloned:
 * nothing is written. Otherwise it is written with O_DIRECT: the bytes go to the disk without a
 * second, dirty copy in the page cache, so nothing has to be flushed later and no memory has to be
 * found for them (see copyDirect in src/native/). The source is read from the page cache where it is
 * there, from the disk where it is not. `offOut` and `length` must be multiples of DIRECT_IO_ALIGN.
 * Resolves with the bytes copied, a multiple of DIRECT_IO_ALIGN (fewer if the source ended), or null
 * where neither is available: the caller copies another way, and later calls resolve null at once.
 */
export const copyThrough = async (fdIn: number, offIn: number, fdOut: number, offOut: number, length: number): Promise<number | null> => {
  checkAligned('copyThrough', offOut, length)
  if (!cloneRefused && offIn % DIRECT_IO_ALIGN === 0) {
    try {
      return await binding!.cloneRange(fdIn, offIn, fdOut, offOut, length)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      // ENOTSUP: no shared blocks here (ext4); EXDEV: two file systems. EINVAL (blocks bigger than
      // 4 KiB, a range past the source's end): this range is copied instead.
      if (code === 'ENOTSUP' || code === 'EOPNOTSUPP' || code === 'EXDEV' || code === 'ENOTTY') cloneRefused = true
      else if (code !== 'EINVAL') throw err
    }
  }
  return tryDirect(() => binding!.copyDirect(fdIn, offIn, fdOut, offOut, length))
}

/** Whether writeThroughAt may work here: the addon loaded, and O_DIRECT was not refused yet. */
export const directWritesAvailable = (): boolean => !directRefused

/** A Buffer whose memory starts at a multiple of DIRECT_IO_ALIGN, for writeThroughAt; null without the addon. */
export const alignedBuffer = (size: number): Buffer | null => (binding ? binding.alignedBuffer(size) : null)

/**
 * Writes `buffer[0, length)` at `offset` with O_DIRECT: to the disk, without a dirty copy in the page
 * cache (see writeDirect in src/native/). `buffer` comes from alignedBuffer(); `length` and `offset`
 * are multiples of DIRECT_IO_ALIGN. Resolves false where direct I/O is refused: the caller writes
 * another way, and later calls resolve false at once.
 */
export const writeThroughAt = async (fd: number, buffer: Buffer, length: number, offset: number): Promise<boolean> => {
  checkAligned('writeThroughAt', offset, length)
  return (await tryDirect(() => binding!.writeDirect(fd, buffer, length, offset))) !== null
}

/**
 * Runs a direct-I/O call of the addon, or resolves null where direct I/O is refused: once refused
 * (EINVAL: no O_DIRECT on this file system, as on tmpfs; ENOENT: no /proc to reopen the file
 * through), it is not tried again.
 */
const tryDirect = async <T>(call: () => Promise<T>): Promise<T | null> => {
  if (directRefused) return null
  try {
    return await call()
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code !== 'EINVAL' && code !== 'ENOENT' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw err
    directRefused = true
    return null
  }
}

/** Set once the file system refused an unnamed file: from then on openUnnamedFile() does not try. */
let unnamedRefused = binding === undefined

/**
 * A new regular file with no name in the file system of `dir` (O_TMPFILE), or null where that is not
 * available (no addon, not Linux, a file system without support). Nobody can see it until
 * linkUnnamedFile() names it, and a process that dies before that leaves nothing behind.
 */
export const openUnnamedFile = (dir: string, mode: number): number | null => {
  if (unnamedRefused) return null
  try {
    return binding!.openTmpfile(dir, mode)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    // ENOTSUP: the file system cannot; EISDIR, EINVAL: a kernel older than O_TMPFILE
    if (code !== 'ENOTSUP' && code !== 'EISDIR' && code !== 'EINVAL') throw err
    unnamedRefused = true
    return null
  }
}

/** A small file to be made by createUnnamedFiles(). */
export interface NewFile {
  readonly data: Uint8Array
  readonly mode: number
  readonly mtimeNs: bigint
}

/**
 * Makes each of `files` an unnamed file in the file system of `dir`, as openUnnamedFile() does, with
 * its bytes written and its mode and mtime set: all in one job on the thread pool. Resolves with one
 * result per file: its fd, or the error that file met. Null where unnamed files are not available.
 */
export const createUnnamedFiles = (dir: string, files: readonly NewFile[]): Promise<Array<number | NodeJS.ErrnoException>> | null => {
  if (unnamedRefused || binding?.createFiles === undefined) return null
  if (files.length === 0) return Promise.resolve([])
  const modes = new Int32Array(files.length)
  const mtimes = new BigInt64Array(files.length)
  files.forEach((f, i) => {
    modes[i] = f.mode
    mtimes[i] = f.mtimeNs
  })
  return binding.createFiles(
    dir,
    files.map((f) => f.data),
    modes,
    mtimes,
  ).then(() =>
    files.map((_, i) => {
      const r = modes[i]!
      if (r >= 0) return r
      const code = util.getSystemErrorName(r)
      return Object.assign(new Error(`${code}: cannot make a file in ${dir}`), { code, errno: r, syscall: 'open', path: dir })
    }),
  )
}

/**
 * Closes `fds` in one job on the thread pool (one by one at once without the addon). None of them may
 * be used again, whether the promise has settled or not.
 */
export const closeFiles = (fds: readonly number[]): Promise<void> => {
  if (fds.length === 0) return Promise.resolve()
  if (binding?.closeFds === undefined) {
    for (const fd of fds) fs.close(fd, () => undefined)
    return Promise.resolve()
  }
  return binding.closeFds(Int32Array.from(fds))
}

/** A small file read whole by readSmallFiles(), with what fstat said of it before and after. */
export interface SmallFile {
  readonly bytes: Buffer
  readonly ino: bigint
  readonly size: number
  readonly mtimeNs: bigint
  readonly ctimeNs: bigint
}

/**
 * Reads each file of `paths`, which may have up to `maxSizes[i]` bytes, whole: all in one job on the
 * thread pool. A file that could not be read (gone, not a regular file, bigger, or changed while it
 * was read) gets its errno as a number. Null without the addon.
 */
export const readSmallFiles = (paths: readonly string[], maxSizes: readonly number[]): Promise<Array<SmallFile | number>> | null => {
  if (binding?.readFiles === undefined) return null
  if (paths.length === 0) return Promise.resolve([])
  const sizes = new Int32Array(paths.length)
  let room = 0
  for (let i = 0; i < paths.length; i++) room += sizes[i] = maxSizes[i]! + 1
  const out = Buffer.allocUnsafeSlow(room)
  const stats = new BigInt64Array(paths.length * 4)
  return binding.readFiles(`${paths.join('\0')}\0`, out, sizes, stats).then(() => {
    const files: Array<SmallFile | number> = []
    for (let i = 0, at = 0; i < paths.length; at += maxSizes[i++]! + 1) {
      const n = sizes[i]!
      if (n < 0) files.push(n)
      else files.push({ bytes: out.subarray(at, at + n), ino: BigInt.asUintN(64, stats[4 * i]!), size: n, mtimeNs: stats[4 * i + 2]!, ctimeNs: stats[4 * i + 3]! })
    }
    return files
  })
}

/**
 * Names the unnamed file open as `fd` `path`; fails with EEXIST if `path` exists. With `identity`, its
 * inode number and new ctime go there (ctime -1 if they could not be read), as fstat would tell them.
 */
export const linkUnnamedFile = (fd: number, path: string, identity?: BigInt64Array): void => {
  binding!.linkFd(fd, path, identity)
}

/**
 * Turns nanoseconds into the value fs.utimes hands to libuv so that the result is the nearest
 * microsecond. Two traps in Node 20's path make a plain `Number(ns) / 1e9` wrong:
 *
 * 1. fs's toUnixTimestamp replaces any negative number with Date.now() (pre-1970 mtimes silently
 *    become "now"), but passes a numeric string through as `+string`. So we pass a string.
 * 2. libuv then truncates the double towards zero to whole microseconds, and a double near 1.7e9
 *    is only good to ~240 ns, so aiming at an exact microsecond can land one below it. We aim half
 *    a microsecond away from zero instead, which truncates back to the microsecond we want.
 *
 * The result is within 500 ns of `ns`, exact when `ns` is a whole microsecond, for times up to
 * the year 2106 (beyond that the double itself is coarser than 500 ns).
 */
export const toLibuvTime = (ns: bigint): string => {
  let us = ns / 1000n // truncates towards zero; round to nearest instead:
  const rem = ns - us * 1000n
  if (rem >= 500n) us += 1n
  else if (rem <= -500n) us -= 1n
  const aim = us * 1000n + (us < 0n ? -500n : 500n)
  const abs = aim < 0n ? -aim : aim
  const frac = (abs % NS_PER_SEC).toString().padStart(9, '0')
  return `${aim < 0n ? '-' : ''}${abs / NS_PER_SEC}.${frac}`
}

/**
 * Hands the memory malloc keeps free back to the system (malloc_trim(3), glibc). True if some was
 * released; false without the addon or off glibc.
 */
export const trimMemory = (): boolean => binding?.trimMemory() ?? false
