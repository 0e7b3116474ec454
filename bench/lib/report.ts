// Turning measures into the tables of BENCHMARKS.md.
import type { Sizes } from './data.js'
import type { Limits } from './limits.js'
import type { Measure } from './tools.js'
import { KiB, MiB, fmtBytes, fmtMs, fmtRatio, fmtSec, median, percentile } from './util.js'
import type { LatencyResult } from './watch.js'

export const WORKLOADS: Record<string, string> = {
  W0: 'empty folder: the fixed cost of one run (start, connect, handshake, exit)',
  W1: 'initial sync, 8 big files + small files in a 3-level tree',
  W2: 'initial sync, many 1 KiB files',
  I1: 'initial sync of the single big file (setup of W3-W7, 1 run)',
  W3: '1-byte overwrite in the middle of the big file',
  W3t: 'touch of the big file (mtime only)',
  W4: '10 bytes inserted at the start of the big file',
  W5: 'append to the big file',
  W6: 'rename of the big file',
  W7: 'copy of the big file to a new name',
  W8: 're-sync of W1, nothing changed',
  W9: 'watch mode: files written / deleted one by one',
}

export interface Pair {
  run: number
  sfm?: Measure
  rsync?: Measure
}

export interface WatchRun {
  tool: 'sfm' | 'rsync'
  run: number
  ok: boolean
  error?: string
  lat?: LatencyResult
  clientRss: number
  serverRss: number
  clientCpuS: number
  serverCpuS: number
  wire: number
  /** rsync only: how many rsync runs the inotify loop started. */
  invocations?: number
}

export function describe(w: string, s: Sizes): string {
  const big = fmtBytes(s.bigFile)
  switch (w) {
    case 'W1':
      return `initial sync: ${s.w1BigFiles} x ${fmtBytes(s.w1BigBytes)} + ${s.w1Small.files.toLocaleString('en')} files of 1-16 KiB, 3 levels`
    case 'W2':
      return `initial sync: ${s.w2.files.toLocaleString('en')} files of 1 KiB`
    case 'I1':
      return `initial sync of one ${big} file (setup of W3-W7, 1 run)`
    case 'W3':
      return `1-byte overwrite in the middle of a ${big} file`
    case 'W3t':
      return `touch (mtime only) of the ${big} file`
    case 'W4':
      return `10 bytes inserted at the start of the ${big} file`
    case 'W5':
      return `${fmtBytes(s.append)} appended to the ${big} file`
    case 'W6':
      return `rename of the ${big} file`
    case 'W7':
      return `copy of the ${big} file to a new name`
    case 'W8':
      return `re-sync of W1, nothing changed`
    default:
      return WORKLOADS[w] ?? w
  }
}

/** The wire-bytes target of the dedup issue, if any (total of both directions). */
export function bytesTarget(w: string, s: Sizes): number | null {
  switch (w) {
    case 'W3':
    case 'W4':
      return 200 * KiB
    case 'W3t':
      return 4 * KiB
    case 'W5':
      return s.append + s.append / 32 // 16.5 MiB for 16 MiB
    case 'W6':
    case 'W7':
      return 64 * KiB
    default:
      return null
  }
}

/** The wall-time target, as the largest allowed sfm/rsync ratio. */
export function timeTarget(w: string): number | null {
  if (w === 'W1' || w === 'W2' || w === 'W8') return 1
  if (['W3', 'W3t', 'W4', 'W5', 'W6', 'W7'].includes(w)) return 0.5
  return null
}

export const RSS_TARGET = 200 * MiB

const okOnly = (ms: (Measure | undefined)[]) => ms.filter((m): m is Measure => !!m && m.ok)
const wire = (m: Measure) => m.wireUp + m.wireDown

export interface Row {
  w: string
  runs: number
  sfmOk: number
  rsyncOk: number
  sfmWall: number
  rsyncWall: number
  ratio: number
  sfmWire: number
  rsyncWire: number
  sfmUp: number
  sfmDown: number
  rsyncUp: number
  rsyncDown: number
  sfmTool: number
  rsyncTool: number
  sfmClientRss: number
  sfmServerRss: number
  rsyncClientRss: number
  rsyncServerRss: number
  sfmClientCpu: number
  sfmServerCpu: number
  rsyncClientCpu: number
  rsyncServerCpu: number
  misses: string[]
  errors: string[]
}

export function summarize(w: string, pairs: Pair[], s: Sizes): Row {
  const sfm = okOnly(pairs.map((p) => p.sfm))
  const rs = okOnly(pairs.map((p) => p.rsync))
  const ratios = pairs.filter((p) => p.sfm?.ok && p.rsync?.ok).map((p) => p.sfm!.wallMs / p.rsync!.wallMs)
  const med = (ms: Measure[], f: (m: Measure) => number) => median(ms.map(f))
  const max = (ms: Measure[], f: (m: Measure) => number) => Math.max(...ms.map(f).filter(Number.isFinite))
  const row: Row = {
    w,
    runs: pairs.length,
    sfmOk: sfm.length,
    rsyncOk: rs.length,
    sfmWall: med(sfm, (m) => m.wallMs),
    rsyncWall: med(rs, (m) => m.wallMs),
    ratio: median(ratios),
    sfmWire: med(sfm, wire),
    rsyncWire: med(rs, wire),
    sfmUp: med(sfm, (m) => m.wireUp),
    sfmDown: med(sfm, (m) => m.wireDown),
    rsyncUp: med(rs, (m) => m.wireUp),
    rsyncDown: med(rs, (m) => m.wireDown),
    sfmTool: med(sfm, (m) => m.toolSent + m.toolReceived),
    rsyncTool: med(rs, (m) => m.toolSent + m.toolReceived),
    sfmClientRss: max(sfm, (m) => m.clientRss),
    sfmServerRss: max(sfm, (m) => m.serverRss),
    rsyncClientRss: max(rs, (m) => m.clientRss),
    rsyncServerRss: max(rs, (m) => m.serverRss),
    sfmClientCpu: med(sfm, (m) => m.clientCpuS),
    sfmServerCpu: med(sfm, (m) => m.serverCpuS),
    rsyncClientCpu: med(rs, (m) => m.clientCpuS),
    rsyncServerCpu: med(rs, (m) => m.serverCpuS),
    misses: [],
    errors: [],
  }
  for (const p of pairs) {
    for (const m of [p.sfm, p.rsync]) if (m && !m.ok) row.errors.push(`run ${p.run} ${m.tool}: ${m.error?.split('\n')[0]}`)
  }
  if (sfm.length < pairs.length) row.misses.push(`sfm failed ${pairs.length - sfm.length} of ${pairs.length} run(s)`)
  const tt = timeTarget(w)
  if (tt !== null && !(row.ratio <= tt)) row.misses.push(`time ${fmtRatio(row.ratio)} of rsync (target <= ${tt})`)
  const bt = bytesTarget(w, s)
  if (bt !== null && !(row.sfmWire < bt)) row.misses.push(`bytes ${fmtBytes(row.sfmWire)} (target < ${fmtBytes(bt)})`)
  if (row.sfmClientRss > RSS_TARGET) row.misses.push(`client RSS ${fmtBytes(row.sfmClientRss)}`)
  if (row.sfmServerRss > RSS_TARGET) row.misses.push(`server RSS ${fmtBytes(row.sfmServerRss)}`)
  return row
}

const mib = (n: number) => (Number.isFinite(n) ? (n / MiB).toFixed(0) : 'n/a')
const cpu = (n: number) => (Number.isFinite(n) ? Math.max(0, n).toFixed(2) : 'n/a')

export function resultTables(rows: Row[], s: Sizes): string[] {
  const L: string[] = []
  L.push('Wall time (median of runs) and bytes on the wire (both directions, counted by the proxy; median):')
  L.push('')
  L.push('| | workload | sfm | rsync | sfm/rsync | target | sfm wire | rsync wire | wire target | verdict |')
  L.push('|---|---|---|---|---|---|---|---|---|---|')
  for (const r of rows) {
    const tt = timeTarget(r.w)
    const bt = bytesTarget(r.w, s)
    const runs = r.sfmOk === r.runs && r.rsyncOk === r.runs ? '' : ` (ok: sfm ${r.sfmOk}/${r.runs}, rsync ${r.rsyncOk}/${r.runs})`
    const verdict = r.misses.length === 0 ? ((r.w === 'I1' || r.w === 'W0') ? 'info' : 'ok') : `**miss**: ${r.misses.join('; ')}`
    L.push(
      `| ${r.w} | ${describe(r.w, s)}${runs} | ${fmtSec(r.sfmWall)} | ${fmtSec(r.rsyncWall)} | ${fmtRatio(r.ratio)} | ${tt === null ? '' : `<= ${tt}`} | ${fmtBytes(r.sfmWire)} | ${fmtBytes(r.rsyncWire)} | ${bt === null ? '' : `< ${fmtBytes(bt)}`} | ${verdict} |`,
    )
  }
  L.push('')
  L.push('Peak RSS (MiB, largest of the runs) and CPU seconds (median) of client and server:')
  L.push('')
  L.push('| | sfmc RSS | sfmd RSS | rsync client RSS | rsync server RSS | sfmc CPU | sfmd CPU | rsync client CPU | rsync server CPU |')
  L.push('|---|---|---|---|---|---|---|---|---|')
  for (const r of rows) {
    L.push(
      `| ${r.w} | ${mib(r.sfmClientRss)} | ${mib(r.sfmServerRss)} | ${mib(r.rsyncClientRss)} | ${mib(r.rsyncServerRss)} | ${cpu(r.sfmClientCpu)} | ${cpu(r.sfmServerCpu)} | ${cpu(r.rsyncClientCpu)} | ${cpu(r.rsyncServerCpu)} |`,
    )
  }
  L.push('')
  L.push('Bytes in detail (median): up = client to server, down = server to client, through the proxy; and what each tool reports itself (sfmc --json wireBytesSent+Received; rsync --stats Total bytes sent+received):')
  L.push('')
  L.push('| | sfm up | sfm down | sfm own count | rsync up | rsync down | rsync own count |')
  L.push('|---|---|---|---|---|---|---|')
  for (const r of rows) {
    L.push(`| ${r.w} | ${fmtBytes(r.sfmUp)} | ${fmtBytes(r.sfmDown)} | ${fmtBytes(r.sfmTool)} | ${fmtBytes(r.rsyncUp)} | ${fmtBytes(r.rsyncDown)} | ${fmtBytes(r.rsyncTool)} |`)
  }
  return L
}

export interface WatchRow {
  tool: 'sfm' | 'rsync'
  runs: number
  ok: number
  createP50: number
  createP99: number
  removeP50: number
  removeP99: number
  missed: number
  clientRss: number
  serverRss: number
  clientCpu: number
  serverCpu: number
  wire: number
  invocations: number
}

export function summarizeWatch(runs: WatchRun[], tool: 'sfm' | 'rsync'): WatchRow {
  const mine = runs.filter((r) => r.tool === tool)
  const ok = mine.filter((r) => r.ok && r.lat)
  const per = (f: (l: LatencyResult) => number) => median(ok.map((r) => f(r.lat!)))
  return {
    tool,
    runs: mine.length,
    ok: ok.length,
    createP50: per((l) => percentile(l.create, 50)),
    createP99: per((l) => percentile(l.create, 99)),
    removeP50: per((l) => percentile(l.remove, 50)),
    removeP99: per((l) => percentile(l.remove, 99)),
    missed: ok.reduce((a, r) => a + r.lat!.missedCreate + r.lat!.missedRemove, 0),
    clientRss: Math.max(...ok.map((r) => r.clientRss)),
    serverRss: Math.max(...ok.map((r) => r.serverRss)),
    clientCpu: median(ok.map((r) => r.clientCpuS)),
    serverCpu: median(ok.map((r) => r.serverCpuS)),
    wire: median(ok.map((r) => r.wire)),
    invocations: median(ok.map((r) => r.invocations ?? NaN)),
  }
}

/** What sfm misses of its W9 targets. */
export function watchMisses(r: WatchRow): string[] {
  const misses: string[] = []
  if (!(r.createP50 < 80)) misses.push(`write p50 ${fmtMs(r.createP50)}`)
  if (!(r.createP99 < 200)) misses.push(`write p99 ${fmtMs(r.createP99)}`)
  if (!(r.removeP50 < 80)) misses.push(`delete p50 ${fmtMs(r.removeP50)}`)
  if (!(r.removeP99 < 200)) misses.push(`delete p99 ${fmtMs(r.removeP99)}`)
  if (r.missed > 0) misses.push(`${r.missed} change(s) never reached the mirror`)
  if (r.ok < r.runs) misses.push(`${r.runs - r.ok} run(s) failed`)
  if (r.clientRss > RSS_TARGET || r.serverRss > RSS_TARGET) misses.push(`RSS ${mib(r.clientRss)}/${mib(r.serverRss)} MiB`)
  return misses
}

export function watchTable(rows: WatchRow[], s: Sizes): string[] {
  const L: string[] = []
  L.push(`W9: ${s.w9Files} files of 1-4 KiB written ${s.w9IntervalMs} ms apart, then deleted ${s.w9IntervalMs} ms apart; time from close()/unlink() to the final state in the mirror (per-run percentiles, median over runs). Target for sfm: p50 < 80 ms, p99 < 200 ms.`)
  L.push('')
  L.push('| tool | write p50 | write p99 | delete p50 | delete p99 | missed | client RSS | server RSS | client CPU s | server CPU s | wire | verdict |')
  L.push('|---|---|---|---|---|---|---|---|---|---|---|---|')
  for (const r of rows) {
    const misses = r.tool === 'sfm' ? watchMisses(r) : []
    const name = r.tool === 'sfm' ? 'sfm (sfmc watching)' : `rsync on inotify (reference; ${Number.isFinite(r.invocations) ? Math.round(r.invocations) : '?'} rsync runs per run)`
    L.push(
      `| ${name} | ${fmtMs(r.createP50)} | ${fmtMs(r.createP99)} | ${fmtMs(r.removeP50)} | ${fmtMs(r.removeP99)} | ${r.missed} | ${mib(r.clientRss)} MiB | ${mib(r.serverRss)} MiB | ${cpu(r.clientCpu)} | ${cpu(r.serverCpu)} | ${fmtBytes(r.wire)} | ${r.tool === 'rsync' ? 'reference' : misses.length ? `**miss**: ${misses.join(', ')}` : 'ok'} |`,
    )
  }
  return L
}

export function limitsTable(l: Limits): string[] {
  const r = (x: number) => `${x.toFixed(0)} MiB/s`
  return [
    '| limit | measured |',
    '|---|---|',
    `| disk write, buffered (${fmtBytes(l.diskBytes)} in 4 MiB writes, no flush) | ${r(l.diskBufferedMiBs)} |`,
    `| disk write + fdatasync (${fmtBytes(l.diskBytes)}, then one fdatasync) | ${r(l.diskFdatasyncMiBs)} |`,
    `| new 4 KiB file + fdatasync + directory fsync | p50 ${fmtMs(l.smallFlushMs.p50)}, p99 ${fmtMs(l.smallFlushMs.p99)} |`,
    `| loopback TCP, node to node (${fmtBytes(l.tcpBytes)}) | ${r(l.tcpMiBs)} |`,
    `| loopback TCP through the counting proxy | ${r(l.tcpProxyMiBs)} |`,
    `| FastCDC chunkLengths (src/chunker.ts), 256 MiB in memory, one core | ${r(l.chunkerMiBs)} |`,
    `| FastCDC in the addon (src/native/sfm_chunker.c, what sfmc uses for big blocks), one pool thread | ${l.addonChunkerMiBs === null ? 'not built' : r(l.addonChunkerMiBs)} |`,
    `| XXH3-128 (src/hash.ts) over 32 KiB pieces, one core | ${r(l.xxh3MiBs)} |`,
    `| digestBuffer (chunk + XXH3-128 + tree, src/digest.ts), one core | ${r(l.digestMiBs)} |`,
  ]
}
