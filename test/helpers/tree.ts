// Test oracle: describes a folder as a sorted list of entries (type, mode, mtime to the ns, size,
// content hash, symlink target) read with lstat, so two folders can be compared exactly.
import { createHash } from 'node:crypto'
import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs'
import { join } from 'node:path'

export interface Described {
  path: string
  kind: 'file' | 'dir' | 'symlink' | 'other'
  mode: number
  mtimeNs: string
  size?: number
  sha?: string
  target?: string
}

/**
 * Every entry below `root` except a top-level `.sfm`; directories' mtimes included unless told not to,
 * and files' contents (hashed) unless `content` is false (a cheap look by lstat only).
 */
export function describeTree(root: string, opts: { dirMtimes?: boolean; content?: boolean } = {}): Described[] {
  const out: Described[] = []
  const walk = (dir: string, prefix: string) => {
    for (const name of readdirSync(dir).sort()) {
      if (!prefix && name === '.sfm') continue
      const abs = join(dir, name)
      const path = prefix ? `${prefix}/${name}` : name
      const st = lstatSync(abs, { bigint: true })
      const mode = Number(st.mode & 0o777n)
      if (st.isDirectory()) {
        // a mirror directory always keeps its owner's bits (PROTOCOL.md 3.4): compare in that form
        out.push({ path, kind: 'dir', mode: mode | 0o700, mtimeNs: opts.dirMtimes === false ? '-' : String(st.mtimeNs) })
        walk(abs, path)
      } else if (st.isFile()) {
        const sha = opts.content === false ? undefined : createHash('sha256').update(readFileSync(abs)).digest('hex')
        out.push({ path, kind: 'file', mode, mtimeNs: String(st.mtimeNs), size: Number(st.size), sha })
      } else if (st.isSymbolicLink()) {
        out.push({ path, kind: 'symlink', mode: 0, mtimeNs: String(st.mtimeNs), target: readlinkSync(abs) })
      } else {
        out.push({ path, kind: 'other', mode, mtimeNs: String(st.mtimeNs) })
      }
    }
  }
  walk(root, '')
  return out
}

/** The first difference between two descriptions, or null if they are equal. */
export function firstDifference(a: Described[], b: Described[]): string | null {
  const byPath = new Map(b.map((e) => [e.path, e]))
  for (const e of a) {
    const f = byPath.get(e.path)
    if (!f) return `${e.path}: missing in the mirror`
    const ej = JSON.stringify(e)
    const fj = JSON.stringify(f)
    if (ej !== fj) return `${e.path}: source ${ej} mirror ${fj}`
    byPath.delete(e.path)
  }
  for (const p of byPath.keys()) return `${p}: in the mirror only`
  return null
}
