// The heap's growth between major GCs (src/util/heap-growth.ts), in real node processes: a small live
// heap gets room for tens of MiB of promoted garbage, so the same work runs fewer major GCs; a growth
// given to node itself is left alone.
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { growthPercent } from '../src/util/heap-growth.js'
import { testdir } from './helpers/testdir.js'

const MiB = 1 << 20
const HEAP_GROWTH_JS = fileURLToPath(new URL('../dist/util/heap-growth.js', import.meta.url))

t.test('the heap may grow to its room, then as told past it', async (t) => {
  const room = 64 * MiB
  t.equal(growthPercent(4 * MiB, room, 50), 300, 'at most four times a tiny heap')
  t.equal(growthPercent(16 * MiB, room, 50), 300)
  t.equal(growthPercent(20 * MiB, room, 50), 220)
  t.equal(growthPercent(32 * MiB, room, 50), 100)
  t.equal(growthPercent(40 * MiB, room, 50), 60)
  t.equal(growthPercent(43 * MiB, room, 50), 50, 'a room less than half of what is live: as told past it')
  t.equal(growthPercent(64 * MiB, room, 50), 50)
  t.equal(growthPercent(500 * MiB, room, 50), 50)
  t.equal(growthPercent(0, room, 50), 300)
  t.equal(growthPercent(8 * MiB, 32 * MiB, 50), 300, "sfmc's room")
  t.equal(growthPercent(16 * MiB, 32 * MiB, 50), 100)
  t.equal(growthPercent(30 * MiB, 32 * MiB, 25), 25, 'past it, as told')
})

/** Counts the major GCs of a node process that promotes short-lived objects over a small live heap. */
function majorGcs(dir: string, nodeArgs: string[], follow: boolean): number {
  const script = join(dir, 'probe.mjs')
  writeFileSync(
    script,
    `import { PerformanceObserver, constants } from 'node:perf_hooks'
if (${follow}) (await import(${JSON.stringify(HEAP_GROWTH_JS)})).followHeapGrowth(${64 * MiB}, 50)
let majors = 0
new PerformanceObserver((l) => { for (const e of l.getEntries()) if (e.detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) majors++ }).observe({ entryTypes: ['gc'] })
const live = Array.from({ length: 20000 }, (_, i) => ({ i, s: 'x' + i }))
const ring = new Array(200000) // each object outlives a few scavenges, then dies
for (let i = 0; i < 3000000; i++) ring[i % ring.length] = { i, a: [i, i + 1] }
await new Promise((resolve) => setTimeout(resolve, 50))
console.log(majors + live.length * 0)
`,
  )
  return Number(execFileSync(process.execPath, [...nodeArgs, script], { encoding: 'utf8', timeout: 30_000 }).trim())
}

t.test('a node process that follows its live heap runs fewer major GCs than one held to half of it', async (t) => {
  const dir = testdir(t)
  const half = majorGcs(dir, ['--heap-growing-percent=50'], false)
  const followed = majorGcs(dir, [], true)
  t.ok(followed < half, `${followed} major GCs against ${half}`)
  const own = majorGcs(dir, ['--heap-growing-percent=50'], true)
  t.ok(own > followed, `node's own --heap-growing-percent wins: ${own} major GCs`)
})
