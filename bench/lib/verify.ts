// Is the mirror exact? Compares two trees: types, names, file sizes, contents (byte by byte), permission
// bits, file mtimes to the nanosecond, symlink targets. Directory mtimes are not compared.
import { closeSync, lstatSync, openSync, readSync, readdirSync, readlinkSync } from 'node:fs'
import { join } from 'node:path'
import { MiB } from './util.js'

const A = Buffer.allocUnsafe(4 * MiB)
const B = Buffer.allocUnsafe(4 * MiB)

function sameContent(a: string, b: string, size: number): boolean {
  const fa = openSync(a, 'r')
  const fb = openSync(b, 'r')
  try {
    for (let pos = 0; pos < size; ) {
      const n = Math.min(A.length, size - pos)
      const ra = readSync(fa, A, 0, n, pos)
      const rb = readSync(fb, B, 0, n, pos)
      if (ra !== rb || A.compare(B, 0, rb, 0, ra) !== 0) return false
      if (ra === 0) return false
      pos += ra
    }
    return true
  } finally {
    closeSync(fa)
    closeSync(fb)
  }
}

/** The first difference between `src` and `dst`, or null. `ignoreTop` names are skipped in dst's root. */
export function firstDifference(src: string, dst: string, ignoreTop: string[] = ['.sfm']): string | null {
  const walk = (rel: string): string | null => {
    const sa = join(src, rel)
    const da = join(dst, rel)
    const ls = (d: string, top: boolean) =>
      readdirSync(d)
        .filter((n) => !(top && ignoreTop.includes(n)))
        .sort()
    const na = ls(sa, rel === '')
    const nb = ls(da, rel === '')
    if (na.length !== nb.length || na.some((n, i) => n !== nb[i])) {
      const missing = na.filter((n) => !nb.includes(n))
      const extra = nb.filter((n) => !na.includes(n))
      return `${rel || '.'}: missing ${JSON.stringify(missing.slice(0, 3))}${missing.length > 3 ? ` (+${missing.length - 3})` : ''}, extra ${JSON.stringify(extra.slice(0, 3))}${extra.length > 3 ? ` (+${extra.length - 3})` : ''}`
    }
    for (const n of na) {
      const r = rel ? `${rel}/${n}` : n
      const x = lstatSync(join(src, r), { bigint: true })
      const y = lstatSync(join(dst, r), { bigint: true })
      const tx = x.mode & 0o170000n
      const ty = y.mode & 0o170000n
      if (tx !== ty) return `${r}: type ${tx.toString(8)} vs ${ty.toString(8)}`
      if (x.isSymbolicLink()) {
        if (readlinkSync(join(src, r)) !== readlinkSync(join(dst, r))) return `${r}: symlink target differs`
        continue
      }
      if (x.isDirectory()) {
        const d = walk(r)
        if (d) return d
        continue
      }
      if ((x.mode & 0o777n) !== (y.mode & 0o777n)) return `${r}: mode ${(x.mode & 0o777n).toString(8)} vs ${(y.mode & 0o777n).toString(8)}`
      if (x.size !== y.size) return `${r}: size ${x.size} vs ${y.size}`
      if (x.mtimeNs !== y.mtimeNs) return `${r}: mtime ${x.mtimeNs} vs ${y.mtimeNs}`
      if (!sameContent(join(src, r), join(dst, r), Number(x.size))) return `${r}: content differs`
    }
    return null
  }
  try {
    return walk('')
  } catch (err) {
    return `error comparing: ${(err as Error).message}`
  }
}
