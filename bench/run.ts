// `npm run bench [-- --quick] [--only W3,W4] [--runs N] [--keep] [--dir DIR] [--json FILE] [--no-limits]`
//
// Runs sfm and rsync (as a daemon on 127.0.0.1, no ssh) on the same deterministic workloads, alternately
// and several times, and prints median wall time, bytes on the wire (counted by the same TCP proxy for both
// tools), peak RSS and CPU of client and server, with the ratio sfm/rsync; and first, the physical limits
// of the machine. See BENCHMARKS.md for the workloads and a full run.
import { copyFileSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, readSync, renameSync, rmSync, statfsSync, truncateSync, unlinkSync, utimesSync, watch, writeFileSync, writeSync } from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { DATA_MTIME, KeyStream, ensureDataSet, sizesFor, writeStreamFile, writeTree, type Sizes } from './lib/data.js'
import { measureLimits, type Limits } from './lib/limits.js'
import { killAll, runMeasured, sh, startDaemon, syncDisks, TIME_BIN } from './lib/proc.js'
import { limitsTable, resultTables, summarize, summarizeWatch, watchMisses, watchTable, type Pair, type Row, type WatchRun } from './lib/report.js'
import { REPO as REPO_DIR, SFMC, Sfm, Rsync, ensureRsync, rsyncVersion, type Env, type Measure, type Tool } from './lib/tools.js'
import { latencyTest } from './lib/watch.js'
import { CLK_TCK, DescendantRss, GiB, MiB, closeLog, fmtBytes, fmtMs, fmtRatio, fmtSec, freePort, logToFile, out, procCpu, procHwm, progress, sleep } from './lib/util.js'
import { firstDifference } from './lib/verify.js'

const ALL = ['W0', 'W1', 'W2', 'W3', 'W3t', 'W4', 'W5', 'W6', 'W7', 'W8', 'W9']
const BIG_SERIES = ['W3', 'W3t', 'W4', 'W5', 'W6', 'W7']

const { values: opt } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    runs: { type: 'string' },
    keep: { type: 'boolean', default: false },
    dir: { type: 'string', default: '/tmp/sfm-bench' },
    json: { type: 'string' },
    'no-limits': { type: 'boolean', default: false },
    'no-verify': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
})

if (opt.help) {
  process.stdout.write(`Usage: npm run bench -- [options]
  --quick          data at 1/16 size (development)
  --only LIST      workloads to run, e.g. W3,W4 (of ${ALL.join(',')})
  --runs N         runs per tool and workload (default 3; quick 2)
  --keep           keep the generated data (reused by the next run)
  --dir DIR        work directory (default /tmp/sfm-bench)
  --json FILE      also write every measure as JSON to FILE
  --no-limits      skip the measurement of the machine's limits
  --no-verify      do not compare each mirror with its source after each timed run
`)
  process.exit(0)
}

const S: Sizes = sizesFor(opt.quick!)
const RUNS = opt.runs ? Math.max(1, Number(opt.runs)) : opt.quick ? 2 : 3
const ONLY = opt.only ? opt.only.split(',').map((w) => w.trim()) : ALL
for (const w of ONLY) if (!ALL.includes(w)) throw new Error(`unknown workload ${w} (known: ${ALL.join(', ')})`)
const want = (w: string) => ONLY.includes(w)
const WORK: string = opt.dir!
const DATA = join(WORK, 'data')
const LOGS = join(WORK, 'logs')
const SCRATCH = join(WORK, 'scratch')
const SFM_STATE = join(WORK, 'sfmc-state')
const env: Env = {
  work: WORK,
  logs: LOGS,
  scratch: SCRATCH,
  timeoutMs: opt.quick ? 10 * 60_000 : 45 * 60_000,
  sfmcEnv: { SFM_STATE_DIR: SFM_STATE },
}
const COMMAND = `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`

// ------------------------------------------------------------------ set-up

process.on('SIGINT', () => {
  killAll()
  process.exit(130)
})
process.on('SIGTERM', () => {
  killAll()
  process.exit(143)
})

mkdirSync(DATA, { recursive: true })
rmSync(LOGS, { recursive: true, force: true })
mkdirSync(LOGS, { recursive: true })
rmSync(SFM_STATE, { recursive: true, force: true }) // sfmc remembers which folder it mirrors: start clean
mkdirSync(SCRATCH, { recursive: true })
logToFile(join(WORK, 'bench.log'))

function diskNeeded(): number {
  // every data set, plus the mirrors of the largest series (kept until the next series starts: a warm-up
  // and RUNS mirrors per tool; the big-file series: a source with a copy, two mirrors with copies, temp)
  const w1 = S.w1BigFiles * S.w1BigBytes + S.w1Small.files * 12 * 1024
  const w2 = S.w2.files * 4 * 1024
  const mirrors = Math.max(2 * (RUNS + 1) * w1, 2 * (RUNS + 1) * w2, 7 * S.bigFile)
  return w1 + w2 + S.bigFile + mirrors + 2 * GiB
}

function machine(): string[] {
  const cpu = os.cpus()[0]?.model ?? '?'
  const df = sh('df', ['-hT', WORK]).split('\n')[1]?.split(/\s+/) ?? []
  const lsblk = sh('lsblk', ['-dno', 'NAME,ROTA,SIZE,MODEL'])
  return [
    `- command: \`${COMMAND}\``,
    `- date: ${new Date().toISOString()}`,
    `- CPU: ${os.cpus().length} x ${cpu} (nproc ${sh('nproc', []) || '?'})`,
    `- memory: ${fmtBytes(os.totalmem())}`,
    `- kernel: ${os.type()} ${os.release()} ${os.arch()}`,
    `- disk of the work dir: ${df[0] ?? '?'} (${df[1] ?? '?'}, ${df[2] ?? '?'}; block devices: ${lsblk.replace(/\n/g, '; ') || '?'})`,
    `- node ${process.version}; ${rsyncVersion()}`,
    `- page cache: ${pageoutNote()}`,
    `- sfm: git ${sh('git', ['-C', REPO_DIR, 'rev-parse', '--short', 'HEAD']) || '?'}${sh('git', ['-C', REPO_DIR, 'status', '--porcelain', 'src']) ? ' with uncommitted changes in src/' : ''}, built by npm run build`,
    `- work dir ${WORK}; ${RUNS} run(s) per tool and workload; ${opt.quick ? 'QUICK mode (1/16 sizes)' : 'full size'}`,
  ]
}

/**
 * Whether the kernel drops idle page cache on its own. Some VMs run a DAMON "pageout" scheme that
 * hands memory back to the host: data not read for a minute is read from disk again, so a workload
 * whose data sat idle is not measured on a warm cache, and the first tool of a pair warms it for the
 * second (the alternation of the order evens that out).
 */
function pageoutNote(): string {
  const root = '/sys/kernel/mm/damon/admin/kdamonds'
  const read = (p: string) => {
    try {
      return readFileSync(p, 'utf8').trim()
    } catch {
      return ''
    }
  }
  const found: string[] = []
  for (const k of safeList(root)) {
    if (read(join(root, k, 'state')) !== 'on') continue
    for (const c of safeList(join(root, k, 'contexts'))) {
      const ctx = join(root, k, 'contexts', c)
      const aggrUs = Number(read(join(ctx, 'monitoring_attrs', 'intervals', 'aggr_us')))
      for (const sch of safeList(join(ctx, 'schemes'))) {
        if (read(join(ctx, 'schemes', sch, 'action')) !== 'pageout') continue
        const minAge = Number(read(join(ctx, 'schemes', sch, 'access_pattern', 'age', 'min')))
        found.push(`pages idle for ${((minAge * aggrUs) / 1e6).toFixed(0)} s or more`)
      }
    }
  }
  return found.length > 0
    ? `the kernel's DAMON pageout drops ${found.join(', ')} (data untouched that long is read from disk again)`
    : 'kept until memory runs short (no DAMON pageout scheme)'
}

function safeList(dir: string): string[] {
  try {
    return readdirSync(dir).filter((n) => /^\d+$/.test(n))
  } catch {
    return []
  }
}

// ------------------------------------------------------------------ data

function makeW1(): string {
  const dir = join(DATA, 'w1')
  const desc = { v: 1, big: [S.w1BigFiles, S.w1BigBytes], small: S.w1Small }
  if (ensureDataSet(dir, desc, (d) => {
    mkdirSync(join(d, 'media'))
    for (let i = 0; i < S.w1BigFiles; i++) writeStreamFile(join(d, 'media', `big-${i}.bin`), S.w1BigBytes, `w1-big-${i}`)
    mkdirSync(join(d, 'tree'))
    writeTree(join(d, 'tree'), S.w1Small, 'w1-small')
  })) progress(`generated W1 data in ${dir}`)
  return dir
}

function makeW2(): string {
  const dir = join(DATA, 'w2')
  if (ensureDataSet(dir, { v: 1, w2: S.w2 }, (d) => void writeTree(d, S.w2, 'w2'))) progress(`generated W2 data in ${dir}`)
  return dir
}

function makeBig(): string {
  const dir = join(DATA, 'big')
  if (ensureDataSet(dir, { v: 1, bytes: S.bigFile }, (d) => writeStreamFile(join(d, 'base.bin'), S.bigFile, 'big'))) progress(`generated the big file in ${dir}`)
  return join(dir, 'base.bin')
}

function makeW9(): string {
  const dir = join(DATA, 'w9')
  if (ensureDataSet(dir, { v: 1, tree: S.w9Tree }, (d) => {
    writeTree(join(d), S.w9Tree, 'w9-tree')
    mkdirSync(join(d, 'w9'))
  })) progress(`generated W9 data in ${dir}`)
  return dir
}

// ------------------------------------------------------------------ running

const pairs = new Map<string, Pair[]>()
const watchRuns: WatchRun[] = []

function record(w: string, run: number, m: Measure): void {
  const list = pairs.get(w) ?? []
  let p = list.find((x) => x.run === run)
  if (!p) list.push((p = { run }))
  p[m.tool as 'sfm' | 'rsync'] = m
  pairs.set(w, list)
  const line = m.ok
    ? `${m.tool.padEnd(5)} ${fmtSec(m.wallMs).padStart(9)}  wire ${fmtBytes(m.wireUp + m.wireDown).padStart(10)}  rss c/s ${fmtBytes(m.clientRss)}/${fmtBytes(m.serverRss)}  cpu c/s ${m.clientCpuS.toFixed(2)}/${m.serverCpuS.toFixed(2)} s (sys ${(m.extra['clientSys'] ?? NaN).toFixed(2)}/${(m.extra['serverSys'] ?? NaN).toFixed(2)})`
    : `${m.tool.padEnd(5)} FAILED: ${m.error}`
  progress(`${w} run ${run}: ${line}`)
}

/** The tools in the order of run `r`: alternating, so that neither always goes first. */
const order = (tools: Tool[], r: number) => (r % 2 === 1 ? tools : [...tools].reverse())

async function timed(tool: Tool, src: string, w: string, run: number): Promise<Measure> {
  syncDisks()
  const m = await tool.once(src, `${w}-r${run}`)
  if (m.ok && !opt['no-verify']) {
    const d = firstDifference(src, tool.mirror)
    if (d) {
      m.ok = false
      m.error = `the mirror differs from the source after the run: ${d}`
    }
  }
  record(w, run, m)
  return m
}

/** An untimed sync (setup or revert); on failure the tool's mirror is rebuilt from scratch. */
async function settle(tool: Tool, src: string, label: string): Promise<void> {
  const m = await tool.once(src, label)
  if (m.ok && firstDifference(src, tool.mirror) === null) return
  progress(`${tool.name}: untimed sync ${label} ${m.ok ? 'left a wrong mirror' : 'failed'}: ${m.error ?? firstDifference(src, tool.mirror)}; rebuilding the mirror`)
  await tool.fresh()
  const again = await tool.once(src, `${label}-rebuild`)
  if (!again.ok) throw new Error(`${tool.name}: cannot rebuild the mirror: ${again.error}`)
}

/**
 * Between series: delete the mirrors of the last one, then generate the data, then an untimed warm-up
 * run of each tool, which also takes the first allocations after the deletion (see Tool.fresh).
 */
async function startSeries(tools: Tool[], make: () => string, warmup: string | null): Promise<string> {
  for (const t of tools) await t.purge()
  syncDisks()
  const src = make()
  if (warmup) {
    for (const t of tools) {
      await t.fresh()
      const m = await t.once(src, `${warmup}-warmup`)
      progress(`${warmup} warm-up: ${t.name} ${m.ok ? fmtSec(m.wallMs) : `FAILED: ${m.error}`}`)
    }
  }
  return src
}

async function seriesW0(tools: Tool[]): Promise<void> {
  const src = await startSeries(tools, () => {
    const d = join(DATA, 'empty')
    mkdirSync(d, { recursive: true })
    return d
  }, 'W0')
  for (let r = 1; r <= RUNS; r++) {
    for (const t of order(tools, r)) {
      await t.fresh()
      await timed(t, src, 'W0', r)
    }
  }
}

async function seriesW1(tools: Tool[]): Promise<void> {
  const src = await startSeries(tools, makeW1, 'W1')
  for (let r = 1; r <= RUNS; r++) {
    for (const t of order(tools, r)) {
      await t.fresh()
      await timed(t, src, 'W1', r)
    }
    if (want('W8')) for (const t of order(tools, r)) await timed(t, src, 'W8', r)
  }
}

async function seriesW2(tools: Tool[]): Promise<void> {
  const src = await startSeries(tools, makeW2, 'W2')
  for (let r = 1; r <= RUNS; r++) {
    for (const t of order(tools, r)) {
      await t.fresh()
      await timed(t, src, 'W2', r)
    }
  }
}

// The W3-W7 changes to the big file, each made different in every run (so that no run can reuse what
// an earlier run sent), and undone afterwards.
interface Change {
  apply(): void
  revert(): void
}

function changeFor(w: string, run: number, src: string, base: string): Change {
  const file = join(src, 'big.bin')
  const tmp = join(WORK, 'big.tmp')
  const restoreTimes = (p: string) => utimesSync(p, DATA_MTIME, DATA_MTIME)
  switch (w) {
    case 'W3': {
      const mid = Math.floor(S.bigFile / 2)
      const b = Buffer.alloc(1)
      return {
        apply() {
          const fd = openSync(file, 'r+')
          readSync(fd, b, 0, 1, mid) // b keeps the original byte for revert()
          const orig = b[0]!
          writeSync(fd, Buffer.from([(orig + 1 + (run % 255)) & 0xff]), 0, 1, mid)
          closeSync(fd)
        },
        revert() {
          const fd = openSync(file, 'r+')
          writeSync(fd, b, 0, 1, mid)
          closeSync(fd)
          restoreTimes(file)
        },
      }
    }
    case 'W3t':
      return {
        apply: () => utimesSync(file, new Date(), new Date()),
        revert: () => restoreTimes(file),
      }
    case 'W4':
      return {
        apply() {
          // an editor's save: a new file with 10 bytes in front of the old content, renamed over it
          const fd = openSync(tmp, 'w', 0o644)
          writeSync(fd, new KeyStream(`insert-${run}`).next(S.insert))
          const inFd = openSync(base, 'r')
          const buf = Buffer.allocUnsafe(8 * MiB)
          for (let pos = 0; ; ) {
            const n = readSync(inFd, buf, 0, buf.length, pos)
            if (n === 0) break
            writeSync(fd, buf, 0, n)
            pos += n
          }
          closeSync(inFd)
          closeSync(fd)
          renameSync(tmp, file)
        },
        revert() {
          copyFileSync(base, tmp)
          restoreTimes(tmp)
          renameSync(tmp, file)
        },
      }
    case 'W5':
      return {
        apply() {
          const fd = openSync(file, 'a')
          writeSync(fd, new KeyStream(`append-${run}`).next(S.append))
          closeSync(fd)
        },
        revert() {
          truncateSync(file, S.bigFile)
          restoreTimes(file)
        },
      }
    case 'W6': {
      const moved = join(src, `big-renamed-${run}.bin`)
      return { apply: () => renameSync(file, moved), revert: () => renameSync(moved, file) }
    }
    case 'W7': {
      const copy = join(src, `big-copy-${run}.bin`)
      return { apply: () => copyFileSync(file, copy), revert: () => unlinkSync(copy) }
    }
    default:
      throw new Error(w)
  }
}

async function seriesBig(tools: Tool[]): Promise<void> {
  const base = await startSeries(tools, makeBig, null)
  const src = join(WORK, 'src-big')
  rmSync(src, { recursive: true, force: true })
  mkdirSync(src)
  copyFileSync(base, join(src, 'big.bin'))
  utimesSync(join(src, 'big.bin'), DATA_MTIME, DATA_MTIME)
  progress(`I1: initial sync of the ${fmtBytes(S.bigFile)} file, once per tool`)
  for (const t of tools) {
    await t.fresh()
    await timed(t, src, 'I1', 1)
  }
  for (const t of tools) {
    if (!pairs.get('I1')?.find((p) => p.run === 1)?.[t.name]?.ok) await settle(t, src, 'I1-retry')
  }
  for (const w of BIG_SERIES.filter(want)) {
    for (let r = 1; r <= RUNS; r++) {
      const c = changeFor(w, r, src, base)
      c.apply()
      for (const t of order(tools, r)) await timed(t, src, w, r)
      c.revert()
      for (const t of tools) await settle(t, src, `${w}-r${r}-revert`)
    }
  }
  rmSync(src, { recursive: true, force: true })
}

async function watchSfm(sfm: Sfm, src: string, run: number): Promise<WatchRun> {
  await sfm.fresh()
  const client = startDaemon(process.execPath, [SFMC, src, `127.0.0.1:${sfm.proxy.port}`, '--json'], env.sfmcEnv)
  const base = { tool: 'sfm' as const, run, clientRss: NaN, serverRss: NaN, clientCpuS: NaN, serverCpuS: NaN, wire: NaN }
  try {
    await client.waitForOutput(/\{"summary"/, env.timeoutMs)
    const d = firstDifference(src, sfm.mirror)
    if (d) throw new Error(`the initial sync left a wrong mirror: ${d}`)
    await sleep(500)
    const c0 = procCpu(client.pid)!
    const s0 = procCpu(sfm.serverPid())!
    await sfm.proxy.take()
    const lat = await latencyTest(join(src, 'w9'), join(sfm.mirror, 'w9'), S.w9Files, S.w9IntervalMs, `sfm-${run}`)
    const wire = await sfm.proxy.stats()
    if (lat.missedDetail.length) {
      // did the mirror get there in the end?
      const deadline = Date.now() + 10_000
      let d = firstDifference(src, sfm.mirror)
      while (d && Date.now() < deadline) {
        await sleep(200)
        d = firstDifference(src, sfm.mirror)
      }
      lat.missedDetail.push(d ? `10 s later the mirror still differs: ${d}` : 'the mirror was equal to the source later')
    }
    const c1 = procCpu(client.pid)
    const s1 = procCpu(sfm.serverPid())
    if (!c1 || !client.isRunning()) throw new Error(`sfmc ended during the test:\n${client.output().slice(-3000)}`)
    if (!s1) throw new Error(`sfmd ended during the test:\n${sfm.serverOutput().slice(-3000)}`)
    const r: WatchRun = {
      ...base,
      ok: true,
      lat,
      clientRss: procHwm(client.pid),
      serverRss: procHwm(sfm.serverPid()),
      clientCpuS: c1.utime + c1.stime - c0.utime - c0.stime,
      serverCpuS: s1.utime + s1.stime - s0.utime - s0.stime,
      wire: wire.up + wire.down,
    }
    return r
  } catch (err) {
    return { ...base, ok: false, error: (err as Error).message }
  } finally {
    await client.stop()
    writeFileSync(join(LOGS, `W9-r${run}-sfmc.log`), client.output())
  }
}

async function watchRsync(rs: Rsync, src: string, run: number): Promise<WatchRun> {
  await rs.fresh()
  const base = { tool: 'rsync' as const, run, clientRss: NaN, serverRss: NaN, clientCpuS: NaN, serverCpuS: NaN, wire: NaN }
  const init = await rs.once(src, `W9-r${run}-initial`)
  if (!init.ok) return { ...base, ok: false, error: init.error }
  // The reference: rsync started on every inotify event of the watched directory, at once (lsyncd with
  // delay 0), and started again when it ends if events came meanwhile. It syncs only that directory.
  const dir = join(src, 'w9')
  let running: Promise<void> | null = null
  let dirty = false
  let invocations = 0
  let clientRss = 0
  let failures = 0
  let lastFailure = ''
  const go = () => {
    if (running) {
      dirty = true
      return
    }
    dirty = false
    invocations++
    running = runMeasured('rsync', ['-a', '--delete', `${dir}/`, rs.url('w9/')], {
      timeoutMs: 60_000,
      scratch: SCRATCH,
    }).then((r) => {
      // 24: "some files vanished before they could be transferred" (deleted while rsync ran): normal here
      if (r.code !== 0 && r.code !== 24) {
        failures++
        lastFailure = `exit ${r.code}: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`
      }
      clientRss = Math.max(clientRss, r.maxRss)
      running = null
      if (dirty) go()
    })
  }
  const watcher = watch(dir, () => go())
  await rs.settle()
  const cpu0 = rs.childCpu()
  // the rsync clients' CPU: what this process's reaped children used meanwhile (only they end meanwhile)
  const own0 = procCpu(process.pid)!
  await rs.proxy.take()
  const srvRss = new DescendantRss(rs.serverPid(), 5)
  srvRss.start()
  try {
    const lat = await latencyTest(dir, join(rs.mirror, 'w9'), S.w9Files, S.w9IntervalMs, `rsync-${run}`)
    watcher.close()
    while (running) await running
    const wire = await rs.proxy.take()
    const server = srvRss.stop()
    await rs.settle()
    const own1 = procCpu(process.pid)!
    const clientCpu = own1.cutime + own1.cstime - own0.cutime - own0.cstime
    return {
      ...base,
      ok: failures === 0,
      error: failures ? `${failures} rsync run(s) failed, the last with ${lastFailure}` : undefined,
      lat,
      clientRss,
      serverRss: server.max,
      clientCpuS: clientCpu,
      serverCpuS: rs.childCpu() - cpu0,
      wire: wire.up + wire.down,
      invocations,
    }
  } finally {
    watcher.close()
    srvRss.stop()
  }
}

async function seriesW9(sfm: Sfm, rs: Rsync): Promise<void> {
  const src = await startSeries([sfm, rs], makeW9, null)
  for (let r = 1; r <= RUNS; r++) {
    for (const name of r % 2 === 1 ? ['sfm', 'rsync'] : ['rsync', 'sfm']) {
      const w = name === 'sfm' ? await watchSfm(sfm, src, r) : await watchRsync(rs, src, r)
      watchRuns.push(w)
      if (w.ok && w.lat) {
        const p = (xs: number[], q: number) => fmtMs(xs.slice().sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil((q / 100) * xs.length) - 1)] ?? NaN)
        progress(
          `W9 run ${r}: ${name.padEnd(5)} write p50 ${p(w.lat.create, 50)} p99 ${p(w.lat.create, 99)}; delete p50 ${p(w.lat.remove, 50)} p99 ${p(w.lat.remove, 99)}; missed ${w.lat.missedCreate}+${w.lat.missedRemove}; rss c/s ${fmtBytes(w.clientRss)}/${fmtBytes(w.serverRss)}`,
        )
        for (const m of w.lat.missedDetail) progress(`  missed: ${m}`)
      } else progress(`W9 run ${r}: ${name} FAILED: ${w.error}`)
    }
  }
}

// ------------------------------------------------------------------ main

async function main(): Promise<number> {
  out(`# sfm vs rsync (${opt.quick ? 'quick' : 'full'})`)
  out('')
  const free = (() => {
    const s = statfsSync(WORK)
    return s.bavail * s.bsize
  })()
  const need = diskNeeded()
  if (free < need) {
    out(`not enough disk in ${WORK}: ${fmtBytes(free)} free, about ${fmtBytes(need)} needed`)
    return 1
  }
  if (sh('getconf', ['CLK_TCK']) && Number(sh('getconf', ['CLK_TCK'])) !== CLK_TCK) out(`warning: CLK_TCK is not ${CLK_TCK}: CPU figures of servers are off`)
  if (!TIME_BIN) out('note: /usr/bin/time missing: client peak RSS polled every 10 ms, client CPU not measured')
  if (!existsSync(SFMC)) throw new Error(`${SFMC} missing: run npm run build`)
  ensureRsync()
  out('## Machine')
  out('')
  for (const l of machine()) out(l)
  out(`- disk free in the work dir: ${fmtBytes(free)} (about ${fmtBytes(need)} needed)`)
  out('')

  let limits: Limits | null = null
  if (!opt['no-limits']) {
    progress('measuring the limits of the machine')
    limits = await measureLimits(WORK, opt.quick!)
    out('')
    out('## Limits')
    out('')
    for (const l of limitsTable(limits)) out(l)
    out('')
  }

  const sfmPort = await freePort()
  const rsyncPort = await freePort()
  const sfm = await Sfm.create(env, sfmPort)
  const rs = await Rsync.create(env, rsyncPort)
  const tools: Tool[] = [sfm, rs]
  progress(`sfmd on 127.0.0.1:${sfmPort} (proxy ${sfm.proxy.port}), rsync daemon on 127.0.0.1:${rsyncPort} (proxy ${rs.proxy.port}); logs in ${LOGS}`)
  const t0 = Date.now()
  try {
    if (want('W0')) await seriesW0(tools)
    if (want('W1') || want('W8')) await seriesW1(tools)
    if (want('W2')) await seriesW2(tools)
    if (BIG_SERIES.some(want)) await seriesBig(tools)
    if (want('W9')) await seriesW9(sfm, rs)
  } finally {
    await sfm.stop()
    await rs.stop()
  }
  progress(`all runs done in ${fmtSec(Date.now() - t0)}`)

  const rows: Row[] = []
  for (const w of ['W0', 'W1', 'W2', 'I1', ...BIG_SERIES, 'W8']) {
    if (!pairs.has(w) || (w !== 'I1' && !want(w))) continue
    rows.push(summarize(w, pairs.get(w)!, S))
  }
  out('')
  out(`## Results (${RUNS} run(s) each, tools alternating; sfm with durability on, as shipped)`)
  out('')
  out(`rsync: \`rsync ${['-a', '--delete', '--stats'].join(' ')} SRC/ rsync://127.0.0.1:PORT/mirror/\` against \`rsync --daemon\` (use chroot = no, no auth). Wall time: spawn to exit of the client (sfmc --once exits once the server has confirmed everything). sfm/rsync: median of the per-run ratios.`)
  out('')
  if (rows.length) for (const l of resultTables(rows, S)) out(l)
  const sfmWatch = watchRuns.length ? summarizeWatch(watchRuns, 'sfm') : null
  if (sfmWatch) {
    out('')
    for (const l of watchTable([sfmWatch, summarizeWatch(watchRuns, 'rsync')], S)) out(l)
  }
  const misses = rows.filter((r) => r.misses.length)
  out('')
  out('## Targets missed by sfm')
  out('')
  const w9 = sfmWatch ? watchMisses(sfmWatch) : []
  if (misses.length === 0 && w9.length === 0 && !watchRuns.some((w) => !w.ok)) out('none')
  for (const r of misses) out(`- ${r.w}: ${r.misses.join('; ')}`)
  if (w9.length) out(`- W9: ${w9.join('; ')}`)
  for (const w of watchRuns) for (const m of w.lat?.missedDetail ?? []) out(`- W9 run ${w.run} ${w.tool}: ${m}`)
  for (const r of rows) for (const e of r.errors) out(`- ${r.w} error: ${e}`)
  for (const w of watchRuns) if (!w.ok) out(`- W9 run ${w.run} ${w.tool} error: ${w.error?.split('\n')[0]}`)

  const json = {
    command: COMMAND,
    machine: machine(),
    sizes: S,
    runs: RUNS,
    limits,
    pairs: Object.fromEntries(pairs),
    rows,
    watch: watchRuns,
  }
  writeFileSync(join(WORK, 'results.json'), JSON.stringify(json, null, 1))
  if (opt.json) writeFileSync(opt.json, JSON.stringify(json, null, 1))
  return rows.some((r) => r.errors.length) || watchRuns.some((w) => !w.ok) ? 1 : 0
}

let code = 1
try {
  code = await main()
} catch (err) {
  out(`bench failed: ${(err as Error).stack ?? String(err)}`)
  code = 1
} finally {
  killAll()
  // data is kept with --keep (and reused); mirrors and sources made from data always go
  for (const d of ['mirrors-sfm', 'mirrors-rsync', 'src-big', 'scratch', 'sfmc-state', 'big.tmp', 'limits.tmp']) rmSync(join(WORK, d), { recursive: true, force: true })
  if (!opt.keep) {
    rmSync(DATA, { recursive: true, force: true })
    out(`removed the data (use --keep to keep it); logs and results.json stay in ${WORK}`)
  }
  closeLog()
}
process.exit(code)
