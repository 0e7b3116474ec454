// sfmd runs for months; its memory between bursts should be what it holds, not what its biggest
// burst once needed. Receiving a big file leaves malloc's arenas with tens of MiB free but still
// mapped. So once enough bytes have come in and the connections have been quiet for a moment, that
// memory goes back to the system (malloc_trim(3)), and once more a while later, after V8's own
// idle-time GC has freed the socket reads it still held.
//
// Measured on the initial sync of a 1 GiB file: sfmd at 138 MiB of RSS when it ended, 108 MiB after
// the first trim, 80 MiB after V8's idle GC, 68 MiB after the second trim.
import { trimMemory } from '../fs/native.js'

/** Bytes received since the last trim before one is worth it. */
export const TRIM_AFTER_BYTES = 64 << 20
/** Quiet time after the last of those bytes: a trim in the middle of a burst would only be undone. */
export const TRIM_QUIET_MS = 2_000
/** When the second trim comes: V8 shrinks an idle heap after about 8 to 20 s. */
export const TRIM_AGAIN_MS = 30_000

export class MemoryTrim {
  private bytes = 0
  private quiet: NodeJS.Timeout | null = null
  private again: NodeJS.Timeout | null = null

  constructor(
    private readonly trim: () => unknown = trimMemory,
    private readonly times = { afterBytes: TRIM_AFTER_BYTES, quietMs: TRIM_QUIET_MS, againMs: TRIM_AGAIN_MS },
  ) {}

  /** Counts bytes received; past the threshold, (re)starts the quiet-time countdown to a trim. */
  received(bytes: number): void {
    this.bytes += bytes
    if (this.bytes < this.times.afterBytes) return
    if (this.quiet) return void this.quiet.refresh()
    if (this.again) clearTimeout(this.again)
    this.again = null
    this.quiet = setTimeout(() => {
      this.quiet = null
      this.bytes = 0
      this.trim()
      this.again = setTimeout(() => {
        this.again = null
        this.trim()
      }, this.times.againMs)
      this.again.unref()
    }, this.times.quietMs)
    this.quiet.unref()
  }

  stop(): void {
    if (this.quiet) clearTimeout(this.quiet)
    if (this.again) clearTimeout(this.again)
    this.quiet = this.again = null
  }
}
