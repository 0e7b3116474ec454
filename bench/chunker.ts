// Throughput of the chunker, of chunking plus hashing, and of digestFile on a 1 GiB file.
//
// Run from the repository's root (tsc ignores tsconfig.json when given files; dist/ is git-ignored):
//   npx tsc --rootDir . --outDir dist/bench --module nodenext --moduleResolution nodenext --target es2022 \
//     --strict --skipLibCheck --esModuleInterop bench/chunker.ts && node dist/bench/bench/chunker.js
//
// Data: an AES-128-CTR keystream (zero key and IV), the same in every run, as in
// shared/research/dedup-design.md section 6. Each figure is the median of the timed passes, after
// warm-up passes; the first pass of all (cold JIT) is printed too.
import { createCipheriv } from 'node:crypto'
import { openSync, closeSync, writeSync, unlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chunkLengths } from '../src/chunker.js'
import { digestBuffer, digestFile } from '../src/digest.js'

const MiB = 1024 * 1024

function keystream(bytes: number): Buffer {
  return createCipheriv('aes-128-ctr', Buffer.alloc(16), Buffer.alloc(16)).update(Buffer.alloc(bytes))
}

// Wall-clock rates, and rates by the process's CPU time: on a shared machine the second is the one that
// other processes disturb least (for the in-memory runs, which use one thread, the two agree when idle).
async function measure(name: string, bytes: number, warm: number, timed: number, run: () => unknown): Promise<void> {
  const wall: number[] = []
  const cpu: number[] = []
  for (let k = 0; k < warm + timed; k++) {
    const c0 = process.cpuUsage()
    const t0 = process.hrtime.bigint()
    await run()
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9
    const c = process.cpuUsage(c0)
    if (k === 0) console.log(`${name}: first pass ${(bytes / MiB / seconds).toFixed(0)} MiB/s`)
    if (k < warm) continue
    wall.push(bytes / MiB / seconds)
    cpu.push(bytes / MiB / ((c.user + c.system) / 1e6))
  }
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[xs.length >> 1]!.toFixed(0)
  console.log(`${name}: ${median(wall)} MiB/s (median of ${timed}, range ${wall[0]!.toFixed(0)}-${wall[wall.length - 1]!.toFixed(0)}); by CPU time ${median(cpu)} MiB/s`)
}

const data = keystream(256 * MiB)
const lengths = chunkLengths(data)
console.log(`256 MiB: ${lengths.length} chunks, average ${(data.length / lengths.length / 1024).toFixed(1)} KiB, largest ${(Math.max(...lengths) / 1024).toFixed(1)} KiB`)
await measure('chunkLengths, 256 MiB in memory', data.length, 4, 7, () => chunkLengths(data))
await measure('digestBuffer (chunk + XXH3-128 + tree), 256 MiB in memory', data.length, 4, 7, () => digestBuffer(data))

const path = join(tmpdir(), `sfm-bench-${process.pid}`)
try {
  const fd = openSync(path, 'w')
  for (let i = 0; i < 4; i++) writeSync(fd, i === 0 ? data : keystream(256 * MiB))
  closeSync(fd)
  await measure('digestFile, 1 GiB file in the page cache', 1024 * MiB, 1, 5, () => digestFile(path))
} finally {
  unlinkSync(path)
}
