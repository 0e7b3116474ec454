// How far V8 lets the heap grow between major GCs, for a process that runs long beside the user's
// own work and must stay small, yet passes hundreds of MiB of short-lived objects through.
//
// V8 sets the next limit at a multiple of what the last major GC left live. With a small live heap
// that multiple leaves little room: sfmc with 14 MiB live and a limit 1.5 times that ran 34 major GCs
// while sending 20,000 small files (0.4 s of its 2.6 s of CPU, and as much again on the concurrent
// marking threads); sfmd, with its dynamic factor of 1.1-1.3 at 8 MiB live, ran 34 while receiving 768
// MiB. So the heap may grow to a room of its own whatever it holds live (at most four times that),
// and past it by half of what is live. Half is what keeps the peak RSS of a first pass over 100,000
// files, with 45 MiB live at its end, under 200 MiB. sfmc's room is 32 MiB, sfmd's 64 MiB: sfmc's
// dead Buffers wait for a major GC too, and with a room of 40 MiB its peak RSS on benchmark W1 came
// to 191-194 MiB, 173-175 MiB with 32.
//
// `--heap-growing-percent` is read at each GC, so it can follow the live size; a value given to node
// itself wins.
import { PerformanceObserver, constants, type PerformanceEntry } from 'node:perf_hooks'
import { getHeapStatistics, setFlagsFromString } from 'node:v8'

const MIN_PERCENT = 50
const MAX_PERCENT = 300

/** The growth to allow after a major GC that left `liveBytes`, in percent of them. */
export function growthPercent(liveBytes: number, roomBytes: number): number {
  const toRoom = Math.ceil(((roomBytes - liveBytes) * 100) / Math.max(liveBytes, 1))
  return Math.min(MAX_PERCENT, Math.max(MIN_PERCENT, toRoom))
}

/**
 * Sets the growth now and again after every major GC, unless node was given its own. `roomBytes`:
 * the heap size allowed whatever is live.
 */
export function followHeapGrowth(roomBytes: number, execArgv: readonly string[] = process.execArgv): void {
  if (execArgv.some((a) => a.startsWith('--heap-growing-percent'))) return
  let current = 0
  const apply = () => {
    const percent = growthPercent(getHeapStatistics().used_heap_size, roomBytes)
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
