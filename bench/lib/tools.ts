// The two tools under test, behind one interface: sfm (sfmd + sfmc --once) and rsync (a daemon on
// 127.0.0.1 + the rsync client). Both talk through their own counting proxy.
import { spawnSync } from 'node:child_process'
import { mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { runMeasured, startDaemon, type Daemon, type RunResult } from './proc.js'
import { CountingProxy } from './proxy.js'
import { DescendantRss, procCpu, procHwm, progress, resetHwm, sleep, waitForPort, descendants } from './util.js'

export const REPO = fileURLToPath(new URL('../../../../', import.meta.url)) // build/ts/bench/lib -> repo
export const SFMD = join(REPO, 'bin/sfmd.js')
export const SFMC = join(REPO, 'bin/sfmc.js')

export interface Measure {
  tool: string
  ok: boolean
  error?: string
  wallMs: number
  clientCpuS: number
  serverCpuS: number
  clientRss: number
  serverRss: number
  /** Through the counting proxy: client -> server, server -> client. */
  wireUp: number
  wireDown: number
  /** What the tool itself reports (sfmc --json summary; rsync --stats "Total bytes sent/received"). */
  toolSent: number
  toolReceived: number
  /** Extra tool-specific figures (rsync literal/matched data, sfm dataBytesSent ...). */
  extra: Record<string, number>
}

export interface Env {
  work: string
  logs: string
  scratch: string
  timeoutMs: number
  /** Environment of every sfmc: its own state directory (SFM_STATE_DIR), emptied at the start. */
  sfmcEnv: NodeJS.ProcessEnv
}

export interface Tool {
  readonly name: 'sfm' | 'rsync'
  /** The current mirror directory. */
  readonly mirror: string
  readonly proxy: CountingProxy
  /**
   * A new, empty mirror (and for sfm, a fresh sfmd on it). Each gets a new directory: earlier ones are
   * deleted only by purge(), between series, because on this machine creating files right after deleting
   * many costs several times the CPU (see BENCHMARKS.md), which would land on whichever tool runs next.
   */
  fresh(): Promise<void>
  /** Deletes every mirror (sfm: stops sfmd first); fresh() must follow. */
  purge(): Promise<void>
  /** One timed sync of `src` to the mirror. */
  once(src: string, label: string): Promise<Measure>
  /** The server's pid (sfmd, or the rsync daemon). */
  serverPid(): number
  stop(): Promise<void>
}

function failure(tool: string, r: RunResult | null, error: string): Measure {
  return {
    tool,
    ok: false,
    error,
    wallMs: r?.wallMs ?? NaN,
    clientCpuS: NaN,
    serverCpuS: NaN,
    clientRss: NaN,
    serverRss: NaN,
    wireUp: NaN,
    wireDown: NaN,
    toolSent: NaN,
    toolReceived: NaN,
    extra: {},
  }
}

function tail(s: string, lines = 30): string {
  return s.trim().split('\n').slice(-lines).join('\n')
}

// ---------------------------------------------------------------- sfm

export class Sfm implements Tool {
  readonly name = 'sfm' as const
  private server: Daemon | null = null
  private serverLog = ''
  private starts = 0
  mirror = ''
  private readonly root: string
  private constructor(readonly proxy: CountingProxy, private readonly port: number, private readonly env: Env) {
    this.root = join(env.work, 'mirrors-sfm')
    mkdirSync(this.root, { recursive: true })
  }

  static async create(env: Env, port: number): Promise<Sfm> {
    const proxy = await CountingProxy.start(port)
    return new Sfm(proxy, port, env)
  }

  async purge(): Promise<void> {
    await this.stopServer()
    rmSync(this.root, { recursive: true, force: true })
    mkdirSync(this.root, { recursive: true })
    this.mirror = ''
  }

  serverPid(): number {
    return this.server?.pid ?? 0
  }

  async fresh(): Promise<void> {
    await this.stopServer()
    this.starts++
    this.mirror = join(this.root, `m${this.starts}`)
    this.serverLog = join(this.env.logs, `sfmd-${this.starts}.log`)
    // durability on, as shipped: no --no-fsync
    this.server = startDaemon(process.execPath, [SFMD, this.mirror, '--host', '127.0.0.1', '--port', String(this.port)])
    await this.server.waitForOutput(/serving .* on 127\.0\.0\.1:\d+/, 60_000)
  }

  private async stopServer(): Promise<void> {
    if (!this.server) return
    const s = this.server
    this.server = null
    await s.stop()
    writeFileSync(this.serverLog, s.output())
  }

  /** Output of the running sfmd so far. */
  serverOutput(): string {
    return this.server?.output() ?? ''
  }

  async once(src: string, label: string): Promise<Measure> {
    const srv = this.server
    if (!srv || !srv.isRunning()) return failure('sfm', null, `sfmd is not running:\n${tail(srv?.output() ?? '')}`)
    resetHwm(srv.pid)
    const cpu0 = procCpu(srv.pid)!
    await this.proxy.take()
    const logFile = join(this.env.logs, `${label}-sfm.log`)
    const r = await runMeasured(process.execPath, [SFMC, src, `127.0.0.1:${this.proxy.port}`, '--once', '--json'], {
      timeoutMs: this.env.timeoutMs,
      scratch: this.env.scratch,
      logFile,
      env: this.env.sfmcEnv,
    })
    const wire = await this.proxy.take()
    const cpu1 = procCpu(srv.pid)
    const serverRss = procHwm(srv.pid)
    if (r.code !== 0 || !cpu1) {
      return failure('sfm', r, `sfmc exited ${r.code}${r.timedOut ? ' (timed out)' : ''}; log ${logFile}\n${tail(r.stderr)}\n--- sfmd:\n${tail(srv.output(), 15)}`)
    }
    let summary: Record<string, number> = {}
    for (const line of r.stdout.split('\n')) {
      if (line.startsWith('{"summary"')) summary = (JSON.parse(line) as { summary: Record<string, number> }).summary
    }
    return {
      tool: 'sfm',
      ok: true,
      wallMs: r.wallMs,
      clientCpuS: r.userS + r.sysS,
      serverCpuS: cpu1.utime + cpu1.stime - cpu0.utime - cpu0.stime,
      clientRss: r.maxRss,
      serverRss,
      wireUp: wire.up,
      wireDown: wire.down,
      toolSent: summary['wireBytesSent'] ?? NaN,
      toolReceived: summary['wireBytesReceived'] ?? NaN,
      extra: {
        dataBytesSent: summary['dataBytesSent'] ?? NaN,
        files: summary['files'] ?? NaN,
        bytesSaved: summary['bytesSaved'] ?? NaN,
        clientUser: r.userS,
        clientSys: r.sysS,
        serverUser: cpu1.utime - cpu0.utime,
        serverSys: cpu1.stime - cpu0.stime,
      },
    }
  }

  async stop(): Promise<void> {
    await this.stopServer()
    this.proxy.stop()
  }
}

// ---------------------------------------------------------------- rsync

export function rsyncVersion(): string {
  const r = spawnSync('rsync', ['--version'], { encoding: 'utf8' })
  return r.status === 0 ? (r.stdout.split('\n')[0] ?? '').trim() : ''
}

/** Installs the Debian package if rsync is missing (we run as root). */
export function ensureRsync(): void {
  if (rsyncVersion()) return
  progress('rsync is missing: running `apt-get update && apt-get install -y rsync`')
  const a = spawnSync('apt-get', ['update'], { stdio: 'inherit' })
  if (a.status !== 0) throw new Error('apt-get update failed')
  const b = spawnSync('apt-get', ['install', '-y', 'rsync'], { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } })
  if (b.status !== 0 || !rsyncVersion()) throw new Error('apt-get install -y rsync failed')
  progress(`installed ${rsyncVersion()}`)
}

export const RSYNC_OPTS = ['-a', '--delete', '--stats']

function statNumber(out: string, name: string): number {
  const m = new RegExp(`${name}: ([\\d,.]+)`).exec(out)
  return m ? Number(m[1]!.replace(/,/g, '')) : NaN
}

export class Rsync implements Tool {
  readonly name = 'rsync' as const
  mirror = ''
  private sub = ''
  private made = 0
  private constructor(
    /** The module's path: mirrors are directories in it. */
    private readonly root: string,
    readonly proxy: CountingProxy,
    private readonly daemon: Daemon,
    readonly port: number,
    private readonly env: Env,
  ) {}

  static async create(env: Env, port: number): Promise<Rsync> {
    const mirror = join(env.work, 'mirrors-rsync')
    mkdirSync(mirror, { recursive: true })
    const conf = join(env.work, 'rsyncd.conf')
    writeFileSync(
      conf,
      [
        `# generated by npm run bench`,
        `address = 127.0.0.1`,
        `port = ${port}`,
        `use chroot = no`,
        `munge symlinks = no`,
        `max connections = 0`,
        `log file = ${join(env.logs, 'rsyncd.log')}`,
        `pid file = ${join(env.work, 'rsyncd.pid')}`,
        ``,
        `[mirror]`,
        `path = ${mirror}`,
        `read only = no`,
        `uid = root`,
        `gid = root`,
        ``,
      ].join('\n'),
    )
    rmSync(join(env.work, 'rsyncd.pid'), { force: true })
    const daemon = startDaemon('rsync', ['--daemon', '--no-detach', `--config=${conf}`])
    await waitForPort(port, 10_000)
    const proxy = await CountingProxy.start(port)
    return new Rsync(mirror, proxy, daemon, port, env)
  }

  serverPid(): number {
    return this.daemon.pid
  }

  async fresh(): Promise<void> {
    this.made++
    this.sub = `m${this.made}`
    this.mirror = join(this.root, this.sub)
    mkdirSync(this.mirror, { recursive: true })
  }

  async purge(): Promise<void> {
    rmSync(this.root, { recursive: true, force: true })
    mkdirSync(this.root, { recursive: true })
    this.mirror = ''
  }

  /** The rsync URL of the current mirror (through the proxy), or of a directory in it. */
  url(dir = ''): string {
    return `rsync://127.0.0.1:${this.proxy.port}/mirror/${this.sub}/${dir}`
  }

  /** CPU of the daemon's reaped children (the per-connection processes), in seconds. */
  childCpu(): number {
    const c = procCpu(this.daemon.pid)
    return c ? c.cutime + c.cstime : NaN
  }

  childSys(): number {
    const c = procCpu(this.daemon.pid)
    return c ? c.cstime : NaN
  }

  /** Waits until the daemon has no children left (so their CPU is in cutime/cstime). */
  async settle(ms = 3000): Promise<void> {
    const deadline = Date.now() + ms
    while (descendants(this.daemon.pid).length > 0 && Date.now() < deadline) await sleep(5)
  }

  async once(src: string, label: string): Promise<Measure> {
    if (!this.daemon.isRunning()) return failure('rsync', null, `rsync daemon is not running:\n${tail(this.daemon.output())}`)
    await this.settle()
    const cpu0 = this.childCpu()
    const sys0 = this.childSys()
    await this.proxy.take()
    const rss = new DescendantRss(this.daemon.pid, 5)
    rss.start()
    const logFile = join(this.env.logs, `${label}-rsync.log`)
    const r = await runMeasured('rsync', [...RSYNC_OPTS, `${src}/`, this.url()], {
      timeoutMs: this.env.timeoutMs,
      scratch: this.env.scratch,
      logFile,
    })
    rss.sample()
    const server = rss.stop()
    const wire = await this.proxy.take()
    await this.settle()
    const cpu1 = this.childCpu()
    if (r.code !== 0) return failure('rsync', r, `rsync exited ${r.code}; log ${logFile}\n${tail(r.stdout + r.stderr)}`)
    return {
      tool: 'rsync',
      ok: true,
      wallMs: r.wallMs,
      clientCpuS: r.userS + r.sysS,
      serverCpuS: cpu1 - cpu0,
      clientRss: r.maxRss,
      serverRss: server.sum,
      wireUp: wire.up,
      wireDown: wire.down,
      toolSent: statNumber(r.stdout, 'Total bytes sent'),
      toolReceived: statNumber(r.stdout, 'Total bytes received'),
      extra: {
        literal: statNumber(r.stdout, 'Literal data'),
        matched: statNumber(r.stdout, 'Matched data'),
        serverProcs: server.procs,
        serverRssMax: server.max,
        clientUser: r.userS,
        clientSys: r.sysS,
        serverUser: cpu1 - cpu0 - (this.childSys() - sys0),
        serverSys: this.childSys() - sys0,
      },
    }
  }

  async stop(): Promise<void> {
    this.proxy.stop()
    await this.daemon.stop()
  }
}
