// Content the server is known to have, so the client can skip HAVE? for it: a bounded LRU of ids,
// valid for one mirror id only [M-WELCOME-2]. A stale entry costs one failed REF and a resend, never
// a wrong file: the server verifies every REF.
import { LRUCache } from 'lru-cache'
import { hashKey } from '../hash.js'

export const DEFAULT_KNOWN_ENTRIES = 1 << 20 // about 65 MB at most; covers ~56 GiB of 59 KiB chunks

export class KnownContent {
  private readonly cache: LRUCache<string, true>
  private mirrorId: string | null = null

  constructor(maxEntries = DEFAULT_KNOWN_ENTRIES) {
    this.cache = new LRUCache({ max: Math.max(1, maxEntries) })
  }

  /** Keeps what is known only if the server is the same mirror as before. */
  useMirror(mirrorId: Buffer): void {
    const id = mirrorId.toString('hex')
    if (id !== this.mirrorId) this.cache.clear()
    this.mirrorId = id
  }

  has(id: Uint8Array): boolean {
    return this.cache.get(hashKey(id)) === true
  }

  add(id: Uint8Array): void {
    this.cache.set(hashKey(id), true)
  }

  forget(id: Uint8Array): void {
    this.cache.delete(hashKey(id))
  }

  get size(): number {
    return this.cache.size
  }
}
