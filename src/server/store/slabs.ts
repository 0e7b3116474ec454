// Where the catalog keeps each file's manifest: chunk ids and chunk lengths copied side by side into
// slabs of their own, so that 100,000 small files cost 100,000 small views, not 100,000 typed arrays
// with a backing store each, and so that no id pins one of Node's shared 8 KiB Buffer pool slabs (and
// the short-lived frames and records allocated next to it). A slab lives as long as any view into it:
// only manifests that live as long as their files go here.
import { HASH_BYTES } from '../../hash.js'
import { keepId } from '../../util/id-slab.js'

const LENGTHS_PER_SLAB = 4096
/** Manifests with more chunks than this get an array of their own (a slab would be mostly theirs). */
const MAX_SLAB_LENGTHS = LENGTHS_PER_SLAB / 4

let slab = new Uint32Array(LENGTHS_PER_SLAB)
let used = 0

/** The chunk ids of a manifest, joined into one slab-held Buffer. */
export function keepIds(parts: readonly Uint8Array[]): Buffer {
  const joined = Buffer.concat(parts) // a big one is an allocation of its own; a small one is short-lived
  return joined.length > MAX_SLAB_LENGTHS * HASH_BYTES ? joined : keepId(joined)
}

/** The chunk lengths of a manifest, as a slab-held view. */
export function keepLengths(values: ArrayLike<number>): Uint32Array {
  const n = values.length
  if (n > MAX_SLAB_LENGTHS) return Uint32Array.from(values)
  if (used + n > slab.length) {
    slab = new Uint32Array(LENGTHS_PER_SLAB)
    used = 0
  }
  const view = slab.subarray(used, used + n)
  view.set(values)
  used += n
  return view
}
