// How far V8 lets the heap grow between major GCs, for a process that runs long beside the user's
// own work and must stay small, yet passes hundreds of MiB of short-lived objects through.
//
// V8 sets the next limit at a multiple of what the last major GC left live. With a small live heap
// that multiple leaves little room: sfmc with 14 MiB live and a limit 1.5 times that ran 34 major GCs
// while sending 20,000 small files (0.4 s of its 2.6 s of CPU, and as much again on the concurrent
// marking threads); sfmd, with its dynamic factor of 1.1-1.3 at 8 MiB live, ran 34 while receiving 768
// MiB. So the heap may grow to ROOM_BYTES whatever it holds live, up to four times that; past that,
// by half of what is live. Half is what keeps the peak RSS of a first pass over 100,000 files, with
// 45 MiB live at its end, under 200 MiB.
//
// `--heap-growing-percent` is read at each GC, so it can follow the live size; a value given to node
// itself wins.
import { PerformanceObserver, constants, type PerformanceEntry } from 'node:perf_hooks'
import { getHeapStatistics, setFlagsFromString } from 'node:v8'

const ROOM_BYTES = 64 << 20
const MIN_PERCENT = 50
const MAX_PERCENT = 300

/** The growth to allow after a major GC that left `liveBytes`, in percent of them. */
export function growthPercent(liveBytes: number): number {
  const toRoom = Math.ceil(((ROOM_BYTES - liveBytes) * 100) / Math.max(liveBytes, 1))
  return Math.min(MAX_PERCENT, Math.max(MIN_PERCENT, toRoom))
}

/** Sets the growth now and again after every major GC, unless node was given its own. */
export function followHeapGrowth(execArgv: readonly string[] = process.execArgv): void {
  if (execArgv.some((a) => a.startsWith('--heap-growing-percent'))) return
  let current = 0
  const apply = () => {
    const percent = growthPercent(getHeapStatistics().used_heap_size)
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
