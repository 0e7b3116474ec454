// Child processes of the benchmark: every one is tracked, has a deadline, and is stopped by its pid.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { now, procHwm, sleep } from './util.js'

const live = new Set<ChildProcess>()

/** Kills every child still running (on exit or Ctrl-C). Each by its own pid or process group. */
export function killAll(): void {
  for (const c of live) {
    try {
      if (c.pid) process.kill(-c.pid, 'SIGKILL')
    } catch {
      try {
        c.kill('SIGKILL')
      } catch {
        /* gone */
      }
    }
  }
  live.clear()
}

export const TIME_BIN = existsSync('/usr/bin/time') ? '/usr/bin/time' : null

export interface RunResult {
  code: number | string
  wallMs: number
  /** From /usr/bin/time (or polling): CPU seconds and peak RSS bytes of the process and its children. */
  userS: number
  sysS: number
  maxRss: number
  stdout: string
  stderr: string
  timedOut: boolean
}

export interface RunOptions {
  timeoutMs: number
  env?: NodeJS.ProcessEnv
  cwd?: string
  /** Where /usr/bin/time writes its figures. */
  scratch: string
  /** Save stdout+stderr here. */
  logFile?: string
}

function keepTail(s: string, max = 2_000_000): string {
  return s.length > max ? s.slice(s.length - max) : s
}

/**
 * Runs a command to its end and measures it: wall time from spawn to exit (our clock), CPU and peak RSS
 * from /usr/bin/time -f (or, without it, VmHWM polled every 10 ms).
 */
export async function runMeasured(cmd: string, args: string[], o: RunOptions): Promise<RunResult> {
  const timeFile = join(o.scratch, `time-${process.pid}-${Math.random().toString(36).slice(2)}.txt`)
  const argv = TIME_BIN ? [TIME_BIN, '-f', '%e %U %S %M', '-o', timeFile, cmd, ...args] : [cmd, ...args]
  const t0 = now()
  const child = spawn(argv[0]!, argv.slice(1), {
    env: { ...process.env, ...o.env },
    cwd: o.cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true, // own process group: a timeout kills /usr/bin/time and the tool together
  })
  live.add(child)
  let stdout = ''
  let stderr = ''
  child.stdout!.on('data', (d: Buffer) => (stdout = keepTail(stdout + d.toString())))
  child.stderr!.on('data', (d: Buffer) => (stderr = keepTail(stderr + d.toString())))
  let polledRss = 0
  const poll = TIME_BIN
    ? null
    : setInterval(() => {
        polledRss = Math.max(polledRss, procHwm(child.pid!))
      }, 10)
  let timedOut = false
  const timer = setTimeout(() => {
    timedOut = true
    try {
      process.kill(-child.pid!, 'SIGKILL')
    } catch {
      /* gone */
    }
  }, o.timeoutMs)
  let wallMs = 0
  const code = await new Promise<number | string>((resolve) => {
    child.on('exit', () => (wallMs = now() - t0))
    child.on('close', (c, sig) => resolve(c ?? sig ?? -1))
  })
  clearTimeout(timer)
  if (poll) clearInterval(poll)
  live.delete(child)
  let userS = NaN
  let sysS = NaN
  let maxRss = polledRss || NaN
  if (TIME_BIN && existsSync(timeFile)) {
    // the file can start with "Command exited with non-zero status N"
    const lines = readFileSync(timeFile, 'utf8').trim().split('\n')
    const f = lines[lines.length - 1]!.trim().split(/\s+/).map(Number)
    if (f.length === 4) {
      userS = f[1]!
      sysS = f[2]!
      maxRss = f[3]! * 1024
    }
    rmSync(timeFile, { force: true })
  }
  if (o.logFile) writeFileSync(o.logFile, `$ ${[cmd, ...args].join(' ')}\n# exit ${code}${timedOut ? ' (timed out)' : ''}, ${wallMs.toFixed(0)} ms\n--- stdout\n${stdout}\n--- stderr\n${stderr}\n`)
  return { code: timedOut ? 'timeout' : code, wallMs, userS, sysS, maxRss, stdout, stderr, timedOut }
}

export interface Daemon {
  readonly child: ChildProcess
  readonly pid: number
  output(): string
  readonly exited: Promise<number | string>
  isRunning(): boolean
  waitForOutput(re: RegExp, ms: number): Promise<RegExpMatchArray>
  /** SIGTERM, then SIGKILL after `ms`. */
  stop(ms?: number): Promise<number | string>
}

/** Starts a long-running process (a server, a watching client). */
export function startDaemon(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): Daemon {
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  live.add(child)
  let out = ''
  child.stdout!.on('data', (d: Buffer) => (out = keepTail(out + d.toString())))
  child.stderr!.on('data', (d: Buffer) => (out = keepTail(out + d.toString())))
  let running = true
  const exited = new Promise<number | string>((resolve) =>
    child.on('exit', (c, s) => {
      running = false
      live.delete(child)
      resolve(c ?? s ?? -1)
    }),
  )
  return {
    child,
    pid: child.pid!,
    output: () => out,
    exited,
    isRunning: () => running,
    async waitForOutput(re, ms) {
      const deadline = Date.now() + ms
      for (;;) {
        const m = out.match(re)
        if (m) return m
        if (!running) throw new Error(`${cmd} ended (${await exited}) before printing ${re}:\n${out.slice(-4000)}`)
        if (Date.now() > deadline) throw new Error(`${cmd}: nothing matching ${re} within ${ms} ms:\n${out.slice(-4000)}`)
        await sleep(10)
      }
    },
    async stop(ms = 10_000) {
      if (!running) return exited
      child.kill('SIGTERM')
      const t = setTimeout(() => child.kill('SIGKILL'), ms)
      const c = await exited
      clearTimeout(t)
      return c
    },
  }
}

/** Runs a short command synchronously, returning stdout (trimmed) or '' on failure. */
export function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' })
  return r.status === 0 ? r.stdout.trim() : ''
}

/** Flushes every dirty page (before a timed run, so that no run pays for the previous one's writes). */
export function syncDisks(): void {
  spawnSync('sync')
}
