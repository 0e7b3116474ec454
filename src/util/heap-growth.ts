// How far V8 lets sfmc's heap grow between major GCs. sfmc runs for months beside the user's own
// work and must stay small, yet passes hundreds of MiB of short-lived objects through.
//
// V8 sets the next limit at a multiple of what the last major GC left live. sfmc held that multiple
// to 1.5 (for the peak RSS of a first pass over 100,000 files, 45 MiB live at its end), which left a
// small heap little room: with 14 MiB live it ran 34 major GCs while sending 20,000 small files (0.4 s
// of its 2.6 s of CPU, and as much again on the concurrent marking threads). So the heap may grow to
// a room of 32 MiB whatever it holds live (at most four times that), and past it by half of what is
// live, as before. The room is small because dead Buffers wait for a major GC too: sfmc's peak RSS on
// benchmark W1 was 191-194 MiB with a room of 40 MiB and 173-175 MiB with 32.
//
// sfmd keeps V8's own choice: with a room of 64 MiB its peak RSS reached 203-204 MiB on W5 and W6.
//
// `--heap-growing-percent` is read at each GC, so it can follow the live size; a value given to node
// itself wins.
import { PerformanceObserver, constants, type PerformanceEntry } from 'node:perf_hooks'
import { getHeapStatistics, setFlagsFromString } from 'node:v8'

const MIN_PERCENT = 50
const MAX_PERCENT = 300

/**
 * The growth to allow after a major GC that left `liveBytes`, in percent of them: up to `roomBytes`
 * (at most four times what is live, and only when that is at least half of it), else `pastRoom`.
 */
export function growthPercent(liveBytes: number, roomBytes: number, pastRoom: number): number {
  const toRoom = Math.ceil(((roomBytes - liveBytes) * 100) / Math.max(liveBytes, 1))
  return toRoom >= MIN_PERCENT ? Math.min(MAX_PERCENT, toRoom) : pastRoom
}

/**
 * Sets the growth now and again after every major GC, unless node was given its own: the heap may
 * grow to `roomBytes` whatever is live, and past that by `pastRoom` percent.
 */
export function followHeapGrowth(roomBytes: number, pastRoom: number, execArgv: readonly string[] = process.execArgv): void {
  if (execArgv.some((a) => a.startsWith('--heap-growing-percent'))) return
  let current = -1
  const apply = () => {
    const percent = growthPercent(getHeapStatistics().used_heap_size, roomBytes, pastRoom)
    if (percent === current) return
    current = percent
    setFlagsFromString(`--heap-growing-percent=${percent}`)
  }
  apply()
  new PerformanceObserver((list) => {
    if (list.getEntries().some((e) => (e as GcEntry).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR)) apply()
  }).observe({ entryTypes: ['gc'] })
}

interface GcEntry extends PerformanceEntry {
  detail?: { kind?: number }
}
