// The physical limits the results are to be read against: disk write speed (buffered, and with
// fdatasync), the latency of a small durable write, loopback TCP throughput (direct and through the
// counting proxy), and the speed of sfm's chunker and hash on one core.
import { spawn } from 'node:child_process'
import { closeSync, fdatasyncSync, fsyncSync, openSync, rmSync, writeSync } from 'node:fs'
import { createRequire } from 'node:module'
import net from 'node:net'
import { join } from 'node:path'
import { CUT_TABLE, chunkLengths } from '../../src/chunker.js'
import { digestBuffer } from '../../src/digest.js'
import { hash128 } from '../../src/hash.js'
import type { CutChunks } from '../../src/native/chunker-addon.js'
import { KeyStream } from './data.js'
import { REPO } from './tools.js'
import { syncDisks } from './proc.js'
import { CountingProxy } from './proxy.js'
import { KiB, MiB, median, now, percentile } from './util.js'

export interface Limits {
  diskBytes: number
  diskBufferedMiBs: number
  diskFdatasyncMiBs: number
  smallFlushMs: { p50: number; p99: number }
  tcpBytes: number
  tcpMiBs: number
  tcpProxyMiBs: number
  chunkerMiBs: number
  /** The addon's chunker (src/native/sfm_chunker.c) on one pool thread; null when it is not built. */
  addonChunkerMiBs: number | null
  xxh3MiBs: number
  digestMiBs: number
}

/** Writes `bytes` in 4 MiB blocks; returns MiB/s. With `flush`, the time includes the final fdatasync. */
function diskWrite(path: string, bytes: number, flush: boolean): number {
  const block = new KeyStream('disk-limit').next(4 * MiB)
  syncDisks()
  const t0 = now()
  const fd = openSync(path, 'w')
  for (let done = 0; done < bytes; done += block.length) writeSync(fd, block)
  if (flush) fdatasyncSync(fd)
  closeSync(fd)
  const ms = now() - t0
  rmSync(path)
  syncDisks()
  return bytes / MiB / (ms / 1000)
}

/** A new 4 KiB file made durable as sfmd does: write, fdatasync, then fsync of the directory. */
function smallFlush(dir: string, count: number): { p50: number; p99: number } {
  const data = new KeyStream('small-flush').next(4 * KiB)
  const times: number[] = []
  const dfd = openSync(dir, 'r')
  for (let i = 0; i < count; i++) {
    const p = join(dir, `flush-${i}`)
    const t0 = now()
    const fd = openSync(p, 'w')
    writeSync(fd, data)
    fdatasyncSync(fd)
    closeSync(fd)
    fsyncSync(dfd)
    times.push(now() - t0)
  }
  closeSync(dfd)
  for (let i = 0; i < count; i++) rmSync(join(dir, `flush-${i}`))
  return { p50: percentile(times, 50), p99: percentile(times, 99) }
}

const SENDER = `
const net = require('node:net')
const [port, total] = process.argv.slice(1).map(Number)
const buf = Buffer.alloc(1 << 20, 7)
const s = net.connect(port, '127.0.0.1', () => {
  let sent = 0
  const pump = () => {
    while (sent < total) {
      sent += buf.length
      if (!s.write(buf)) return s.once('drain', pump)
    }
    s.end()
  }
  pump()
})
`

/** Sends `bytes` from a child process to this process over loopback TCP (optionally via the proxy). */
async function tcp(bytes: number, viaProxy: boolean): Promise<number> {
  let got = 0
  let t0 = 0
  let resolveDone!: (ms: number) => void
  const done = new Promise<number>((r) => (resolveDone = r))
  const server = net.createServer((sock) => {
    t0 = now()
    sock.on('data', (d: Buffer) => {
      got += d.length
    })
    sock.on('end', () => resolveDone(now() - t0))
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as net.AddressInfo).port
  const proxy = viaProxy ? await CountingProxy.start(port) : null
  const child = spawn(process.execPath, ['-e', SENDER, String(proxy ? proxy.port : port), String(bytes)], { stdio: 'inherit' })
  const ms = await done
  await new Promise((r) => child.on('exit', r))
  proxy?.stop()
  server.close()
  if (got !== bytes) throw new Error(`tcp: got ${got} of ${bytes}`)
  return bytes / MiB / (ms / 1000)
}

function cpuRate(bytes: number, passes: number, fn: () => unknown): number {
  fn() // warm-up
  const rates: number[] = []
  for (let i = 0; i < passes; i++) {
    const t0 = now()
    fn()
    rates.push(bytes / MiB / ((now() - t0) / 1000))
  }
  return median(rates)
}

/** The addon's cutter, from the repository's build: src/native/chunker-addon.ts finds it relative to
 * itself, which the bench's compiled copy in build/ts/ is not. */
function addonCutter(): CutChunks | undefined {
  try {
    return (createRequire(import.meta.url)(join(REPO, 'build/Release/sfm_chunker.node')) as { cutChunks: CutChunks }).cutChunks
  } catch {
    return undefined
  }
}

async function cpuRateAsync(bytes: number, passes: number, fn: () => Promise<unknown>): Promise<number> {
  await fn() // warm-up
  const rates: number[] = []
  for (let i = 0; i < passes; i++) {
    const t0 = now()
    await fn()
    rates.push(bytes / MiB / ((now() - t0) / 1000))
  }
  return median(rates)
}

export async function measureLimits(work: string, quick: boolean): Promise<Limits> {
  const diskBytes = (quick ? 256 : 1024) * MiB
  const path = join(work, 'limits.tmp')
  const diskBufferedMiBs = median([diskWrite(path, diskBytes, false), diskWrite(path, diskBytes, false)])
  const diskFdatasyncMiBs = median([diskWrite(path, diskBytes, true), diskWrite(path, diskBytes, true)])
  const smallFlushMs = smallFlush(work, quick ? 50 : 200)
  const tcpBytes = (quick ? 1024 : 4096) * MiB
  const tcpMiBs = median([await tcp(tcpBytes, false), await tcp(tcpBytes, false), await tcp(tcpBytes, false)])
  const tcpProxyMiBs = median([await tcp(tcpBytes, true), await tcp(tcpBytes, true), await tcp(tcpBytes, true)])
  const data = new KeyStream('chunker-limit').next(256 * MiB)
  const chunkerMiBs = cpuRate(data.length, 5, () => chunkLengths(data))
  const cut = addonCutter()
  const addonChunkerMiBs = cut ? await cpuRateAsync(data.length, 5, () => cut(data, 0, data.length, true, CUT_TABLE)) : null
  // XXH3-128 per chunk-sized piece (32 KiB), as sfm hashes
  const xxh3MiBs = cpuRate(data.length, 5, () => {
    for (let off = 0; off < data.length; off += 32 * KiB) hash128(data.subarray(off, off + 32 * KiB))
  })
  const digestMiBs = cpuRate(data.length, 3, () => digestBuffer(data))
  return { diskBytes, diskBufferedMiBs, diskFdatasyncMiBs, smallFlushMs, tcpBytes, tcpMiBs, tcpProxyMiBs, chunkerMiBs, addonChunkerMiBs, xxh3MiBs, digestMiBs }
}
