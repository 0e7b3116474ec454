// Content the server is known to have, so the client can skip HAVE? for it: an LRU of ids bounded by
// entries and by bytes, valid for one mirror id only [M-WELCOME-2]. A stale entry costs one failed REF
// and a resend, never a wrong file: the server verifies every REF.
import { LRUCache } from 'lru-cache'
import { hashKey } from '../hash.js'

/** What one remembered id costs in memory: a 16-character key, the map entry and the LRU's links. */
export const KNOWN_ENTRY_BYTES = 100
export const DEFAULT_KNOWN_ENTRIES = 1 << 20 // about 29 GiB of 29 KiB chunks
export const DEFAULT_KNOWN_BYTES = 64 << 20

export interface CacheLimits {
  entries?: number
  bytes?: number
}

export class KnownContent {
  private readonly cache: LRUCache<string, true>
  private mirrorId: string | null = null

  constructor(limits: CacheLimits = {}) {
    // Both bounds as one size bound: lru-cache's `max` would allocate its arrays for `max` entries up
    // front (a million entries is tens of MB before anything is cached).
    const entries = Math.max(1, limits.entries ?? DEFAULT_KNOWN_ENTRIES)
    const bytes = Math.max(KNOWN_ENTRY_BYTES, limits.bytes ?? DEFAULT_KNOWN_BYTES)
    this.cache = new LRUCache({
      maxSize: Math.min(bytes, entries * KNOWN_ENTRY_BYTES),
      sizeCalculation: () => KNOWN_ENTRY_BYTES,
    })
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

  /** add() for an id already held as its hashKey: the cache shares the caller's string. */
  addKey(key: string): void {
    this.cache.set(key, true)
  }

  forget(id: Uint8Array): void {
    this.cache.delete(hashKey(id))
  }

  get size(): number {
    return this.cache.size
  }
}
