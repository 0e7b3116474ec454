// Small helpers shared by the benchmark: timing, statistics, formatting, logging, /proc readers.
import { closeSync, openSync, readFileSync, readdirSync, writeSync } from 'node:fs'
import net from 'node:net'

export const KiB = 1024
export const MiB = 1024 * 1024
export const GiB = 1024 * MiB

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}

export function now(): number {
  return performance.now()
}

// ---- statistics ----

export function median(xs: readonly number[]): number {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  if (v.length === 0) return NaN
  const m = v.length >> 1
  return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2
}

/** Nearest-rank percentile (p in 0..100). */
export function percentile(xs: readonly number[], p: number): number {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  if (v.length === 0) return NaN
  const rank = Math.ceil((p / 100) * v.length)
  return v[Math.min(v.length - 1, Math.max(0, rank - 1))]!
}

// ---- formatting ----

export function fmtBytes(n: number): string {
  if (!Number.isFinite(n)) return 'n/a'
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let u = 0
  let v = n
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024
    u++
  }
  return u === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)} ${units[u]}`
}

export function fmtSec(ms: number): string {
  if (!Number.isFinite(ms)) return 'n/a'
  return ms < 1000 ? `${ms.toFixed(0)} ms` : `${(ms / 1000).toFixed(2)} s`
}

export function fmtMs(ms: number): string {
  return Number.isFinite(ms) ? `${ms.toFixed(1)} ms` : 'n/a'
}

export function fmtRatio(r: number): string {
  if (!Number.isFinite(r)) return 'n/a'
  if (r === 0) return '0'
  return r < 0.01 ? r.toExponential(1) : r.toFixed(2)
}

export function fmtRate(bytes: number, ms: number): string {
  return `${((bytes / MiB) / (ms / 1000)).toFixed(0)} MiB/s`
}

// ---- logging: to stdout and to a log file ----

let logFd: number | null = null

export function logToFile(path: string): void {
  logFd = openSync(path, 'w')
}

export function closeLog(): void {
  if (logFd !== null) closeSync(logFd)
  logFd = null
}

export function out(text = ''): void {
  process.stdout.write(text + '\n')
  if (logFd !== null) writeSync(logFd, text + '\n')
}

export function progress(text: string): void {
  const t = new Date().toISOString().slice(11, 19)
  out(`[${t}] ${text}`)
}

// ---- /proc readers ----

export const CLK_TCK = 100 // sysconf(_SC_CLK_TCK) on Linux/x86-64; checked against getconf at start

export interface ProcCpu {
  utime: number // seconds
  stime: number
  cutime: number // reaped children
  cstime: number
}

export function procCpu(pid: number): ProcCpu | null {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ')
    // fields after "(comm)": state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17); f[0] is field 3
    return {
      utime: Number(f[11]) / CLK_TCK,
      stime: Number(f[12]) / CLK_TCK,
      cutime: Number(f[13]) / CLK_TCK,
      cstime: Number(f[14]) / CLK_TCK,
    }
  } catch {
    return null
  }
}

/** Peak resident set (VmHWM) in bytes, or 0 if the process is gone. */
export function procHwm(pid: number): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) * 1024 : 0
  } catch {
    return 0
  }
}

/** Resets VmHWM to the current RSS (writes 5 to clear_refs, Linux 4.0+; needs the right to). */
export function resetHwm(pid: number): boolean {
  try {
    const fd = openSync(`/proc/${pid}/clear_refs`, 'w')
    try {
      writeSync(fd, '5')
    } finally {
      closeSync(fd)
    }
    return true
  } catch {
    return false
  }
}

/** All descendants of a process (through /proc/PID/task/TID/children). */
export function descendants(pid: number): number[] {
  const found: number[] = []
  const walk = (p: number) => {
    let tasks: string[] = []
    try {
      tasks = readdirSync(`/proc/${p}/task`)
    } catch {
      return
    }
    for (const t of tasks) {
      let kids = ''
      try {
        kids = readFileSync(`/proc/${p}/task/${t}/children`, 'utf8')
      } catch {
        continue
      }
      for (const k of kids.trim().split(/\s+/)) {
        if (!k) continue
        const c = Number(k)
        found.push(c)
        walk(c)
      }
    }
  }
  walk(pid)
  return found
}

/**
 * Polls the VmHWM of a process's descendants while something runs (rsync's daemon forks a child per
 * connection, which forks again into generator and receiver). Keeps each pid's last value.
 */
export class DescendantRss {
  private readonly peaks = new Map<number, number>()
  private timer: NodeJS.Timeout | null = null
  constructor(private readonly root: number, private readonly everyMs = 5) {}
  start(): void {
    this.sample()
    this.timer = setInterval(() => this.sample(), this.everyMs)
  }
  sample(): void {
    for (const p of descendants(this.root)) {
      const h = procHwm(p)
      if (h > (this.peaks.get(p) ?? 0)) this.peaks.set(p, h)
    }
  }
  stop(): { sum: number; max: number; procs: number } {
    if (this.timer) clearInterval(this.timer)
    this.timer = null
    let sum = 0
    let max = 0
    for (const v of this.peaks.values()) {
      sum += v
      max = Math.max(max, v)
    }
    return { sum, max, procs: this.peaks.size }
  }
}

// ---- network ----

/**
 * A port that is free now and that the kernel will not hand out meanwhile: it is taken below the
 * ephemeral range. The servers that use it start later (sfmd once per series), and a port from
 * listen(0) could be given in between to a proxy's or a client's socket.
 */
export async function freePort(): Promise<number> {
  let low = 32768
  try {
    low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || low
  } catch {
    // not Linux: keep the usual bound
  }
  const from = Math.max(1024, Math.min(10000, low - 2000))
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = from + Math.floor(Math.random() * (low - from))
    if (!usedPorts.has(port) && (await canListen(port))) {
      usedPorts.add(port)
      return port
    }
  }
  throw new Error(`no free port below ${low} after 100 attempts`)
}

const usedPorts = new Set<number>()

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer()
    s.once('error', () => resolve(false))
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)))
  })
}

export async function waitForPort(port: number, ms: number): Promise<void> {
  const deadline = Date.now() + ms
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const c = net.connect(port, '127.0.0.1')
      c.once('connect', () => {
        c.destroy()
        resolve(true)
      })
      c.once('error', () => resolve(false))
    })
    if (ok) return
    if (Date.now() > deadline) throw new Error(`nothing listens on 127.0.0.1:${port} after ${ms} ms`)
    await sleep(50)
  }
}
