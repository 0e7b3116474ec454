// Fault injection with real processes: sfmd and sfmc killed with SIGKILL at random points of large
// syncs, connections cut at random points by a proxy, a server whose disk is full, and writers that do
// not stop. During every trial a monitor polls the mirror (from a worker thread, every 10 ms) and checks
// that every regular file at a final path is a version its source file really had; after every trial
// the mirror must equal the folder exactly and the server's temporary folder must be empty.
//
// `npm run faults` runs the full suite (SFM_FULL=1: 20 server kills, 20 client kills, 50 cuts); `npm
// test` runs a few of each. The seed is printed; SFM_FAULT_SEED=<n> repeats a run's choices (the
// timing of real processes still varies).
import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, appendFileSync, writeFileSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import {
  Dataset,
  MiB,
  MirrorMonitor,
  Rng,
  quickDifference,
  runSeed,
  seededBytes,
  sha256,
  subSeed,
  tail,
  tmpEntries,
  waitConverged,
  type DatasetOptions,
  type MonitorReport,
} from '../helpers/faults.js'
import { mirrorDifference, sleep, startClient, startServer, waitUntil, type Proc, type Server } from '../helpers/procs.js'
import { startProxy, type Proxy } from '../helpers/proxy.js'
import { testdir } from '../helpers/testdir.js'

const FULL = process.env['SFM_FULL'] === '1'
const SEED = runSeed()
const TRIALS = FULL ? { server: 20, client: 20, cut: 50 } : { server: 2, client: 2, cut: 3 }
const DATA: DatasetOptions = { bigFiles: 3, bigMinMiB: 8, bigMaxMiB: 64, smallDirs: 30, smallFiles: 300 }
/** How long a trial may take to converge after its fault (a few seconds are enough when all is well). */
const CONVERGE_MS = 30_000
/** SFM_FAULT_VERBOSE=1: clients log every change the server applied (for reports of failures). */
const CLIENT_ARGS = process.env['SFM_FAULT_VERBOSE'] === '1' ? ['-v'] : []
/** ...and servers log debug output. */
const SERVER_ARGS = process.env['SFM_FAULT_VERBOSE'] === '1' ? ['-v'] : []

t.comment(`fault suite: seed ${SEED} (repeat with SFM_FAULT_SEED=${SEED}), ${FULL ? 'full' : 'sample'} run: ${JSON.stringify(TRIALS)}`)

type Tap = Test

// ------------------------------------------------------------------------------------------------
// A server, a client (optionally through a counting proxy), a data set and a monitor

interface Tracked<P extends Proc> {
  proc: P
  ended: boolean
}

function track<P extends Proc>(proc: P): Tracked<P> {
  const tr = { proc, ended: false }
  void proc.exited.then(() => (tr.ended = true))
  return tr
}

class Rig {
  server!: Tracked<Server>
  client!: Tracked<Proc>
  proxy: Proxy | null = null
  serverPort = 0
  /** outputs of processes this rig killed, newest last */
  readonly history: string[] = []
  /** violations the monitor had reported when a trial last checked */
  private violationsSeen = 0

  private constructor(
    readonly t: Tap,
    readonly src: string,
    readonly mirror: string,
    readonly rng: Rng,
    readonly monitor: MirrorMonitor,
    readonly dataset: Dataset,
    private readonly clientArgs: string[],
  ) {}

  static async start(t: Tap, label: string, opts: { proxy: boolean; data: DatasetOptions; mirror?: string; clientArgs?: string[] }): Promise<Rig> {
    // Registered before testdir(t), so that it runs before the fixture is removed: a client still
    // watching the folder would mirror its removal into a mirror being removed at the same time.
    let made: Rig | null = null
    t.teardown(() => made?.stopAll())
    const dir = testdir(t)
    const src = join(dir, 'src')
    const mirror = opts.mirror ?? join(dir, 'mirror')
    mkdirSync(src)
    const rng = new Rng(subSeed(SEED, label))
    const server = await startServer(t, mirror, SERVER_ARGS)
    // the monitor starts with the mirror, before anything is written
    const monitor = new MirrorMonitor(t, mirror)
    const dataset = new Dataset(src, rng, monitor, `${SEED}:${label}`, opts.data)
    const rig = new Rig(t, src, mirror, rng, monitor, dataset, [...CLIENT_ARGS, ...(opts.clientArgs ?? [])])
    rig.server = track(server)
    rig.serverPort = server.port
    if (opts.proxy) rig.proxy = await startProxy(t, server.port)
    made = rig
    return rig
  }

  /** Stops both processes (SIGKILL) and the proxy. */
  async stopAll(): Promise<void> {
    const procs = [this.client?.proc, this.server?.proc].filter((p): p is Proc => p !== undefined)
    for (const p of procs) p.kill('SIGKILL')
    await Promise.all(procs.map((p) => p.exited))
    await this.proxy?.close()
  }

  get clientPort(): number {
    return this.proxy ? this.proxy.port : this.serverPort
  }

  startClient(): void {
    this.client = track(startClient(this.t, this.src, this.clientPort, this.clientArgs))
  }

  async killServer(): Promise<void> {
    this.server.proc.kill('SIGKILL')
    await this.server.proc.exited
    this.history.push(`--- server pid ${this.server.proc.pid} (killed)\n${this.server.proc.output()}`)
  }

  async restartServer(): Promise<void> {
    this.server = track(await startServer(this.t, this.mirror, [...SERVER_ARGS, '--port', String(this.serverPort)]))
  }

  async killClient(): Promise<void> {
    this.client.proc.kill('SIGKILL')
    await this.client.proc.exited
    this.history.push(`--- client pid ${this.client.proc.pid} (killed)\n${this.client.proc.output()}`)
  }

  /** Why a process that should run does not, or null. */
  ended(): string | null {
    if (this.server.ended) return `the server exited: ${lastError(this.server.proc)}`
    if (this.client.ended) return `the client exited: ${lastError(this.client.proc)}`
    return null
  }

  /** Whether both processes still run, and neither reported an internal error. */
  health(): string | null {
    const ended = this.ended()
    if (ended !== null) return ended
    for (const [who, p] of [['server', this.server.proc], ['client', this.client.proc]] as const) {
      if (/internal error|uncaught|unhandled/i.test(p.output())) return `the ${who} reported an internal error`
    }
    return null
  }

  /** Everything a report of a failure needs. */
  diagnostics(extra: Record<string, unknown> = {}): Record<string, unknown> {
    return {
      seed: SEED,
      ...extra,
      lastChanges: this.dataset.lastChanges.slice(-60),
      tmp: tmpEntries(this.mirror),
      quickDifference: quickDifference(this.src, this.mirror),
      // stdout has the client's summaries (one per reconcile that finished), stderr its log
      clientStdout: tail(this.client?.proc.stdout() ?? '', 5),
      clientLog: tail(this.client?.proc.stderr() ?? '', 60),
      server: tail(this.server.proc.output(), 60),
      killedProcesses: this.history.slice(-2).map((h) => tail(h, 30)),
    }
  }

  /** Waits for convergence, an empty temporary folder and healthy processes; asserts all of them. */
  async settle(what: string, extra: Record<string, unknown> = {}): Promise<boolean> {
    const t = this.t
    try {
      await waitConverged(this.src, this.mirror, CONVERGE_MS, () => this.ended())
    } catch (err) {
      t.fail(`${what}: no convergence: ${(err as Error).message}`, this.diagnostics(extra))
      return false
    }
    if (!t.equal(mirrorDifference(this.src, this.mirror), null, `${what}: mirror equals the folder`)) return false
    try {
      await waitUntil(() => tmpEntries(this.mirror).length === 0, 10_000, () => `.sfm/tmp holds ${tmpEntries(this.mirror).join(', ')}`)
    } catch (err) {
      t.fail(`${what}: ${(err as Error).message}`, this.diagnostics(extra))
      return false
    }
    const health = this.health()
    if (health !== null) {
      t.fail(`${what}: ${health}`, this.diagnostics(extra))
      return false
    }
    const report = await this.monitor.report()
    const fresh = report.violations.slice(this.violationsSeen)
    this.violationsSeen = report.violations.length
    if (fresh.length > 0) {
      t.fail(`${what}: a file at a final path was not a version of its source`, this.diagnostics({ ...extra, violations: fresh.slice(0, 10) }))
      return false
    }
    return true
  }
}

/** The line of a process's output that best says why it ended. */
function lastError(p: Proc): string {
  const lines = p.output().trim().split('\n')
  return lines.find((l) => /^\w*Error\b|internal error|sfm[cd]: /.test(l)) ?? lines.pop() ?? ''
}

async function finish(t: Tap, rig: Rig): Promise<MonitorReport> {
  const report = await rig.monitor.stop()
  t.ok(report.polls > 10, `the mirror was polled ${report.polls} times, ${report.checks} file versions checked (slowest poll ${report.slowestPollMs} ms)`)
  t.same(report.violations, [], 'no file at a final path was ever anything but a version of its source')
  return report
}

// ------------------------------------------------------------------------------------------------
// Random fault points in large syncs

type Fault = 'server' | 'client' | 'cut'

interface TrialResult {
  ok: boolean
  point: string
  ms: number
}

/** One trial: change the data set, wait for a random point of the sync, inject the fault, settle. */
async function trial(rig: Rig, fault: Fault, n: number): Promise<TrialResult> {
  const { rng, proxy } = rig
  const expected = rig.dataset.mutate()
  const started = Date.now()
  const base = proxy!.up
  // a random number of bytes through the proxy (most trials), or a random delay
  const byBytes = rng.chance(0.8)
  const targetBytes = Math.floor(rng.next() * expected)
  const targetMs = rng.range(0, 2000)
  let reason = ''
  let lastQuick = 0
  for (;;) {
    const now = Date.now()
    if (byBytes && proxy!.up - base >= targetBytes) reason = `after ${proxy!.up - base} of ${expected} bytes`
    else if (!byBytes && now - started >= targetMs) reason = `after ${now - started} ms`
    else if (now - lastQuick >= 25) {
      lastQuick = now
      if (quickDifference(rig.src, rig.mirror) === null) reason = `when idle (converged after ${proxy!.up - base} bytes, ${now - started} ms)`
    }
    if (reason) break
    const dead = rig.ended()
    if (dead !== null) {
      rig.t.fail(`${fault} trial ${n}: ${dead}`, rig.diagnostics())
      return { ok: false, point: 'none', ms: now - started }
    }
    if (now - started > CONVERGE_MS) {
      rig.t.fail(`${fault} trial ${n}: the sync neither reached its fault point nor converged`, rig.diagnostics())
      return { ok: false, point: 'none', ms: now - started }
    }
    await sleep(1)
  }
  const inTmp = tmpEntries(rig.mirror).length
  const point = `${reason}, ${inTmp} upload(s) in .sfm/tmp, at ${new Date().toISOString()}`
  switch (fault) {
    case 'server': {
      await rig.killServer()
      await sleep(rng.range(0, 400))
      await rig.restartServer()
      break
    }
    case 'client': {
      await rig.killClient()
      await sleep(rng.range(0, 300))
      rig.startClient()
      break
    }
    case 'cut':
      proxy!.cutAll()
      break
  }
  const ok = await rig.settle(`${fault} trial ${n} (${point})`, { trial: n, fault, point })
  return { ok, point, ms: Date.now() - started }
}

async function faultTrials(t: Tap, fault: Fault, count: number): Promise<void> {
  const rig = await Rig.start(t, `trials-${fault}`, { proxy: true, data: DATA })
  const bytes = rig.dataset.create()
  const t0 = Date.now()
  rig.startClient()
  if (!(await rig.settle('initial sync'))) return
  t.comment(`initial sync: ${rig.dataset.fileCount} files, ${(bytes / MiB).toFixed(0)} MiB in ${Date.now() - t0} ms`)
  let passed = 0
  const failed: number[] = []
  for (let n = 1; n <= count; n++) {
    const r = await trial(rig, fault, n)
    t.comment(`${fault} trial ${n}/${count}: fault ${r.point}; ${r.ok ? 'converged' : 'FAILED'} ${r.ms} ms after the changes`)
    if (r.ok) {
      passed++
      continue
    }
    failed.push(n)
    // Count how often this happens rather than stop at the first: restart both processes (a stuck
    // client or server recovers that way, if anything does) and go on if the mirror converges then.
    await rig.killClient()
    if (!rig.server.ended) await rig.killServer()
    await rig.restartServer()
    rig.startClient()
    if (!(await rig.settle(`recovery after ${fault} trial ${n} (both processes restarted)`))) break
    t.comment(`${fault} trial ${n}: converged after both processes were restarted`)
  }
  if (failed.length > 0) t.comment(`${fault} trials that failed: ${failed.join(', ')}`)
  t.equal(passed, count, `${passed} of ${count} ${fault} trials converged cleanly`)
  await finish(t, rig)
}

t.test(`kill -9 of the server at ${TRIALS.server} random points of large syncs`, (t) => faultTrials(t, 'server', TRIALS.server))
t.test(`kill -9 of the client at ${TRIALS.client} random points of large syncs`, (t) => faultTrials(t, 'client', TRIALS.client))
t.test(`the connection cut by a proxy at ${TRIALS.cut} random points of large syncs`, (t) => faultTrials(t, 'cut', TRIALS.cut))

// ------------------------------------------------------------------------------------------------
// A connection that keeps failing while the folder changes

t.test('watch mode: the connection cut every 200 ms for 4 s while files change, then converges', async (t) => {
  const rig = await Rig.start(t, 'flapping', { proxy: true, data: { ...DATA, bigFiles: 2, bigMinMiB: 8, bigMaxMiB: 16, smallFiles: 200 } })
  rig.dataset.create()
  rig.startClient()
  if (!(await rig.settle('initial sync'))) return
  const proxy = rig.proxy!
  let cuts = 0
  const cutter = setInterval(() => {
    proxy.cutAll()
    cuts++
  }, 200)
  const until = Date.now() + 4000
  let rounds = 0
  try {
    while (Date.now() < until) {
      if (rounds % 4 === 1) rig.dataset.writeBig(rig.rng.pick(rig.dataset.bigPaths()))
      else rig.dataset.mutateSmall(12)
      rounds++
      await sleep(rig.rng.range(50, 400))
    }
  } finally {
    clearInterval(cutter)
  }
  t.comment(`${cuts} cuts during ${rounds} rounds of changes; ${proxy.up} bytes up`)
  t.ok(await rig.settle('after the cuts stopped'), 'converged')
  t.match(rig.client.proc.output(), /connection lost|reconnect|retrying/i, 'the client saw its connection fail')
  await finish(t, rig)
})

// ------------------------------------------------------------------------------------------------
// Writers that do not stop

t.test('a file rewritten 200 times in a tight loop and a file appended to for 5 s converge to their final content', async (t) => {
  const rig = await Rig.start(t, 'writers', { proxy: false, data: { ...DATA, bigFiles: 1, bigMinMiB: 8, bigMaxMiB: 8, smallDirs: 6, smallFiles: 30 } })
  rig.dataset.create()
  rig.startClient()
  if (!(await rig.settle('initial sync'))) return
  const hot = join(rig.src, 'hot.bin')
  const log = join(rig.src, 'growing.log')
  // every version of hot.bin, registered before the first is written: each rewrite is a complete new
  // content of its own size (64 KiB to 2 MiB), so a torn copy shows in its size as well as its bytes
  const versions = Array.from({ length: 200 }, (_, i) => seededBytes(`${SEED}:hot:${i}`, rig.rng.range(64 << 10, 2 * MiB)))
  for (const v of versions) {
    rig.monitor.expect('hot.bin', v)
    rig.monitor.expectRewrite('hot.bin', v.length, () => v)
  }
  rig.monitor.record('growing.log')
  writeFileSync(log, '')
  await sleep(100)

  const appendUntil = Date.now() + 5000
  let appends = 0
  const appender = (async () => {
    while (Date.now() < appendUntil) {
      appendFileSync(log, seededBytes(`${SEED}:log:${appends}`, rig.rng.range(16, 4096)))
      appends++
      if (appends % 4 === 0) await sleep(1)
    }
  })()
  await sleep(1000)
  const t0 = Date.now()
  const took: number[] = []
  for (const v of versions) {
    // the tight loop: nothing in between but reading the clock
    const a = performance.now()
    writeFileSync(hot, v)
    took.push(performance.now() - a)
  }
  const rewriteMs = Date.now() - t0
  await appender
  const slow = took.map((ms, i) => ({ i, ms })).filter((w) => w.ms >= 30)
  t.comment(
    `200 rewrites from ${new Date(t0).toISOString()} in ${rewriteMs} ms (slowest ${Math.max(...took).toFixed(1)} ms; ` +
      `${slow.length} took 30 ms or more); ${appends} appends, ${statSync(log).size} bytes`,
  )
  t.ok(await rig.settle('after the writers stopped'), 'converged')
  t.ok(readFileSync(join(rig.mirror, 'hot.bin')).equals(versions[199]!), 'hot.bin ends with the last version')
  const final = readFileSync(log)
  t.ok(readFileSync(join(rig.mirror, 'growing.log')).equals(final), 'growing.log ends with the final content')
  const report = await finish(t, rig)
  if (report.prefixes) t.comment(`the mirror showed ${report.prefixes} state(s) of hot.bin caught in the middle of a rewrite (a prefix of a version)`)
  const seen = report.observed['growing.log'] ?? []
  const notPrefix = seen.filter((o) => o.size > final.length || sha256(final.subarray(0, o.size)) !== o.sha)
  t.ok(seen.length > 0, `growing.log was seen in ${seen.length} states`)
  t.same(notPrefix, [], 'every state of growing.log on the mirror was a prefix of its final content')
})

// ------------------------------------------------------------------------------------------------
// A full disk on the server

t.test('a full disk on the server: a clear error, retries, no torn file, and convergence once there is room', async (t) => {
  const mount = mkdtempSync(join(tmpdir(), 'sfm-full-disk-'))
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64m,mode=0755', 'tmpfs', mount], { stdio: 'pipe' })
  } catch (err) {
    rmSync(mount, { recursive: true, force: true })
    const reason = `cannot mount a 64 MiB tmpfs for the server (needs root): ${String((err as Error).message).split('\n')[0]}`
    t.pass('the full-disk test is skipped', { skip: reason })
    return
  }
  let rig: Rig | null = null
  t.teardown(async () => {
    // the server must be gone before the file system can be unmounted
    await rig?.stopAll()
    try {
      execFileSync('umount', [mount], { stdio: 'pipe' })
    } catch {
      execFileSync('umount', ['-l', mount], { stdio: 'pipe' })
    }
    rmSync(mount, { recursive: true, force: true })
  })
  const mirror = join(mount, 'mirror')
  rig = await Rig.start(t, 'full-disk', { proxy: false, mirror, data: { bigFiles: 0, bigMinMiB: 0, bigMaxMiB: 0, smallDirs: 9, smallFiles: 100 } })
  const r = rig
  r.dataset.create()
  // three files of 24 MiB: 72 MiB do not fit in 64
  const bigs = [0, 1, 2].map((i) => `big/full${i}.bin`)
  for (const [i, p] of bigs.entries()) {
    const b = seededBytes(`${SEED}:full:${i}`, 24 * MiB)
    r.monitor.expect(p, b)
    writeFileSync(join(r.src, p), b)
  }
  r.startClient()
  try {
    await r.client.proc.waitForOutput(/no space/i, 60_000)
  } catch (err) {
    t.fail(`the client did not report a full disk: ${(err as Error).message.split('\n')[0]}`, r.diagnostics())
    return
  }
  t.match(r.client.proc.output(), /SFM_ERR_NO_SPACE|no space left on the server's disk/, 'the client reports a clear error')
  // keep going for a while: nothing crashes, and the client keeps trying
  await sleep(6000)
  t.equal(r.health(), null, 'both processes still run')
  const missing = bigs.filter((p) => !existsSync(join(mirror, p)))
  t.comment(`missing on the mirror while the disk is full: ${missing.join(', ')}`)
  t.ok(missing.length > 0 && missing.length < 3, 'some but not all big files fit')
  const refused = (p: string) => r.client.proc.output().split(`refused upload of ${p}: no space`).length - 1
  for (const p of missing) t.ok(refused(p) >= 2, `the client tried ${p} again (${refused(p)} refusals)`)
  let tmpClean = true
  await waitUntil(() => tmpEntries(mirror).length === 0, 10_000, () => '').catch(() => (tmpClean = false))
  t.ok(tmpClean, `no partial upload is left in .sfm/tmp while the disk is full (${tmpEntries(mirror).join(', ') || 'empty'})`)
  const giveUp = /giving up on (\S+)/.exec(r.client.proc.output())
  if (giveUp) t.comment(`the client said: ${giveUp[0]} ... (from then on it retries every 10 s, doubling)`)

  // Room again: delete a big file the mirror has, so the rest fits. The server keeps what it deletes in
  // its trash, and empties it when an upload finds the disk full, so the space comes back at the
  // client's next retry (10 to 30 s later); the sample run also grows the file system. Either way the
  // client must upload what it could not before without being told anything else.
  const victim = bigs.find((p) => !missing.includes(p))!
  r.dataset.remove(victim)
  if (!FULL) execFileSync('mount', ['-o', 'remount,size=112m', mount], { stdio: 'pipe' })
  const freed = Date.now()
  let converged = false
  try {
    await waitConverged(r.src, mirror, FULL ? 110_000 : 30_000, () => r.ended())
    converged = true
  } catch (err) {
    t.fail(`no convergence after ${victim} was deleted${FULL ? '' : ' and the disk grew to 112 MiB'}: ${(err as Error).message}`, r.diagnostics({ missing, victim }))
  }
  if (converged) {
    t.comment(`converged ${Date.now() - freed} ms after ${victim} was deleted`)
    t.ok(await r.settle('after space was freed'), 'converged once the data fits')
  }
  await finish(t, r)
})
