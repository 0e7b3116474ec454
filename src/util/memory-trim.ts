// sfmd and a watching sfmc run for months; their memory between bursts should be what they hold,
// not what their biggest burst once needed. Moving a big file leaves malloc's arenas with tens of MiB
// free but still mapped. So once enough bytes have passed and the connection has been quiet for a
// moment, that memory goes back to the system (malloc_trim(3)); and once more after the next major
// GC, which is when V8 frees the Buffers it still held (its idle-time GC comes 8 to 20 s later).
//
// Measured on the initial sync of a 1 GiB file: sfmd at 138 MiB of RSS when it ended, 108 MiB after
// the first trim, 80 MiB after V8's idle GC, 68 MiB after a second trim. A watching sfmc after the
// initial sync of benchmark W1: 143 MiB, 103 MiB after V8's idle GC, 83-86 MiB after a trim.
import { PerformanceObserver, constants, type PerformanceEntry } from 'node:perf_hooks'
import { trimMemory } from '../fs/native.js'

/** Bytes moved since the last trim before one is worth it. */
export const TRIM_AFTER_BYTES = 64 << 20
/** Quiet time after the last of those bytes: a trim in the middle of a burst would only be undone. */
export const TRIM_QUIET_MS = 2_000
/** How long the second trim waits for a major GC before it is dropped. */
export const TRIM_GC_WAIT_MS = 120_000

/** Calls `fn` after each major GC until the returned function is called. */
export type MajorGcs = (fn: () => void) => () => void

const majorGcs: MajorGcs = (fn) => {
  const observer = new PerformanceObserver((list) => {
    if (list.getEntries().some((e) => (e as GcEntry).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR)) fn()
  })
  observer.observe({ entryTypes: ['gc'] })
  return () => observer.disconnect()
}

interface GcEntry extends PerformanceEntry {
  detail?: { kind?: number }
}

export interface TrimTimes {
  afterBytes: number
  quietMs: number
  gcWaitMs: number
}

export class MemoryTrim {
  private bytes = 0
  private quiet: NodeJS.Timeout | null = null
  /** Waiting for the major GC after a trim: the end of that wait, and of the subscription. */
  private waitGc: { timer: NodeJS.Timeout; stop: () => void } | null = null

  constructor(
    private readonly trim: () => unknown = trimMemory,
    private readonly times: TrimTimes = { afterBytes: TRIM_AFTER_BYTES, quietMs: TRIM_QUIET_MS, gcWaitMs: TRIM_GC_WAIT_MS },
    private readonly gcs: MajorGcs = majorGcs,
  ) {}

  /** Counts bytes moved; past the threshold, (re)starts the quiet-time countdown to a trim. */
  moved(bytes: number): void {
    this.bytes += bytes
    if (this.bytes < this.times.afterBytes) return
    if (this.quiet) return void this.quiet.refresh()
    this.stopWaitingForGc()
    this.quiet = setTimeout(() => {
      this.quiet = null
      this.bytes = 0
      this.trim()
      this.trimAfterNextGc()
    }, this.times.quietMs)
    this.quiet.unref()
  }

  stop(): void {
    if (this.quiet) clearTimeout(this.quiet)
    this.quiet = null
    this.stopWaitingForGc()
  }

  private trimAfterNextGc(): void {
    const stop = this.gcs(() => {
      this.stopWaitingForGc()
      this.trim()
    })
    const timer = setTimeout(() => this.stopWaitingForGc(), this.times.gcWaitMs)
    timer.unref()
    this.waitGc = { timer, stop }
  }

  private stopWaitingForGc(): void {
    if (!this.waitGc) return
    clearTimeout(this.waitGc.timer)
    this.waitGc.stop()
    this.waitGc = null
  }
}
