// Real sfmd and sfmc processes for end-to-end tests, on 127.0.0.1, stopped by pid at teardown.
// Every wait here has a deadline.
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { createServer, type AddressInfo } from 'node:net'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describeTree, firstDifference } from './tree.js'

const REPO = fileURLToPath(new URL('../..', import.meta.url))
// Clients remember the identity of the folder they mirror (src/client/safety.ts). Test folders are made
// again at the same paths on every run, so each test process keeps that memory in a directory of its own.
const STATE_DIR = mkdtempSync(join(tmpdir(), 'sfm-test-state-'))
process.on('exit', () => rmSync(STATE_DIR, { recursive: true, force: true }))
export const SFMD = `${REPO}bin/sfmd.js`
export const SFMC = `${REPO}bin/sfmc.js`

interface Teardown {
  teardown(fn: () => unknown): void
}

export interface Proc {
  readonly child: ChildProcess
  readonly pid: number
  /** Everything written to stdout and stderr so far. */
  output(): string
  stdout(): string
  stderr(): string
  /** Resolves with the exit code (or the signal name) when the process ends. */
  readonly exited: Promise<number | string>
  /** Waits until the output matches, or throws after `ms`. */
  waitForOutput(re: RegExp, ms?: number): Promise<RegExpMatchArray>
  kill(signal?: NodeJS.Signals): void
  /** Peak resident memory (VmHWM) in bytes, while the process runs. */
  peakRss(): number
}

export function spawnNode(t: Teardown, script: string, args: string[], env: NodeJS.ProcessEnv = {}): Proc {
  const child = spawn(process.execPath, [script, ...args], {
    env: { ...process.env, SFM_STATE_DIR: STATE_DIR, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  let err = ''
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()))
  const exited = new Promise<number | string>((resolve) => child.on('exit', (code, sig) => resolve(code ?? sig ?? -1)))
  let done = false
  void exited.then(() => (done = true))
  t.teardown(async () => {
    if (!done) {
      child.kill('SIGKILL')
      await exited
    }
  })
  const proc: Proc = {
    child,
    pid: child.pid!,
    output: () => out + err,
    stdout: () => out,
    stderr: () => err,
    exited,
    async waitForOutput(re, ms = 10_000) {
      const deadline = Date.now() + ms
      for (;;) {
        const m = (out + err).match(re)
        if (m) return m
        if (done) throw new Error(`process ended (${await exited}) before output matched ${re}:\n${out}${err}`)
        if (Date.now() > deadline) throw new Error(`no output matching ${re} within ${ms} ms:\n${out}${err}`)
        await sleep(20)
      }
    },
    kill(signal = 'SIGTERM') {
      if (!done) child.kill(signal)
    },
    peakRss() {
      const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))
      return m ? Number(m[1]) * 1024 : 0
    },
  }
  return proc
}

export interface Server extends Proc {
  readonly port: number
}

/** Starts sfmd on 127.0.0.1 with a port the system picks, and waits until it listens. */
export async function startServer(t: Teardown, dir: string, args: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<Server> {
  const port = args.includes('--port') ? [] : ['--port', '0']
  const p = spawnNode(t, SFMD, [dir, '--host', '127.0.0.1', ...port, ...args], env)
  const m = await p.waitForOutput(/serving .* on 127\.0\.0\.1:(\d+)/, 30_000)
  return Object.assign(p, { port: Number(m[1]) })
}

export function startClient(t: Teardown, dir: string, port: number, args: string[] = [], env: NodeJS.ProcessEnv = {}): Proc {
  return spawnNode(t, SFMC, [dir, `127.0.0.1:${port}`, ...args], env)
}

/** Runs `sfmc --once` to the end; returns its exit code and output. */
export async function syncOnce(t: Teardown, dir: string, port: number, args: string[] = [], ms = 120_000) {
  const p = startClient(t, dir, port, ['--once', ...args])
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<string>((resolve) => (timer = setTimeout(() => resolve('timeout'), ms)))
  const code = await Promise.race([p.exited, deadline])
  clearTimeout(timer)
  if (code === 'timeout') p.kill('SIGKILL')
  return { code, output: p.output(), stdout: p.stdout() }
}

/** A port on 127.0.0.1 that nothing listens on right now: taken from the system, then let go. */
export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as AddressInfo
      probe.close(() => resolve(port))
    })
  })
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}

/** Polls until `check` returns true, or throws after `ms` with what `describe` says. */
export async function waitUntil(check: () => boolean | Promise<boolean>, ms: number, describe: () => string): Promise<void> {
  const deadline = Date.now() + ms
  for (;;) {
    if (await check()) return
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${describe()}`)
    await sleep(50)
  }
}

/** Waits until the mirror equals the folder exactly, or throws with the first difference. */
export async function waitForMirror(src: string, mirror: string, ms = 20_000): Promise<void> {
  let diff: string | null = 'not compared yet'
  await waitUntil(
    () => {
      try {
        diff = firstDifference(describeTree(src), describeTree(mirror))
      } catch (err) {
        diff = String(err) // an entry vanished while it was being read: try again
      }
      return diff === null
    },
    ms,
    () => `mirror differs: ${diff}`,
  )
}

export function mirrorDifference(src: string, mirror: string): string | null {
  return firstDifference(describeTree(src), describeTree(mirror))
}

/**
 * The files of a mirror's uploads under way: named ones under .sfm/tmp, and the unnamed ones
 * (O_TMPFILE) that the server process `pid` (this one by default) holds open there; /proc shows
 * those as `<dir>/#<inode> (deleted)`.
 */
export function uploadFiles(root: string, pid: number | 'self' = 'self'): string[] {
  const tmpDir = join(root, '.sfm', 'tmp')
  const unnamed: string[] = []
  let fds: string[] = []
  try {
    fds = readdirSync(`/proc/${pid}/fd`)
  } catch {
    // the process has ended
  }
  for (const fd of fds) {
    let target: string
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`)
    } catch {
      continue // closed since the listing
    }
    if (target.startsWith(`${tmpDir}/#`) && target.endsWith(' (deleted)')) unnamed.push(target)
  }
  return [...readdirSync(tmpDir), ...unnamed]
}
