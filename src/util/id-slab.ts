// Long-lived hashes, copied side by side into slabs of their own. A small Buffer from Node's shared
// pool keeps its whole 8 KiB pool slab alive, along with whatever short-lived bytes (file contents,
// frames) were allocated next to it: 100,000 remembered content ids pinned ~50 MiB that way. Here a slab
// holds only ids kept for as long as the tree that names them.

const SLAB_BYTES = 16 * 1024

let slab = Buffer.allocUnsafeSlow(SLAB_BYTES)
let used = 0

/** A copy of `id` that pins no memory but its own slab. */
export function keepId(id: Uint8Array): Buffer {
  if (used + id.length > slab.length) {
    slab = Buffer.allocUnsafeSlow(Math.max(SLAB_BYTES, id.length))
    used = 0
  }
  const copy = slab.subarray(used, used + id.length)
  copy.set(id)
  used += id.length
  return copy
}
