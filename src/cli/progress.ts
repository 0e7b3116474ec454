// The progress of the first reconcile, for people: on a terminal one line rewritten in place; without
// one a line every few seconds; with --json one object per line. It stops when the reconcile is done.
import { formatBytes, type SyncStats } from '../client/stats.js'

export type ProgressMode = 'tty' | 'lines' | 'json' | 'none'

/** How often the progress is looked at; a terminal line is rewritten each time. */
const TICK_MS = 250
/** Lines and JSON objects: the first as soon as the plan is known, then one per this interval. */
const LINES_EVERY_MS = 2_000

export class ProgressReporter {
  private timer: NodeJS.Timeout | null = null
  private shown = false
  private lastLineAt = 0

  constructor(
    private readonly stats: SyncStats,
    private readonly mode: ProgressMode,
    private readonly write: (text: string) => void,
  ) {}

  start(): void {
    if (this.mode === 'none') return
    this.timer = setInterval(() => this.show(), TICK_MS)
    this.timer.unref()
  }

  /** Stops, and clears the line on a terminal so the summary starts clean. */
  stop(): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = null
    if (this.mode === 'tty' && this.shown) this.write('\r\x1b[K')
  }

  private show(): void {
    const p = this.stats.progress()
    if (p.totalFiles === 0) return // not planned yet, or nothing to upload
    if (this.mode !== 'tty') {
      const now = Date.now()
      if (now - this.lastLineAt < LINES_EVERY_MS) return
      this.lastLineAt = now
    }
    this.shown = true
    if (this.mode === 'json') {
      this.write(JSON.stringify({ progress: p }) + '\n')
      return
    }
    const eta = p.etaSeconds === null ? '' : `, ${formatDuration(p.etaSeconds)} left`
    const line =
      `reconciling: ${p.files}/${p.totalFiles} files, ${formatBytes(p.bytes)} of ${formatBytes(p.totalBytes)}` +
      `, ${formatBytes(p.bytesPerSecond)}/s${eta}`
    this.write(this.mode === 'tty' ? `\r\x1b[K${line}` : `${line}\n`)
  }
}

export function formatDuration(seconds: number): string {
  const h = Math.floor(seconds / 3600)
  const m = Math.floor((seconds % 3600) / 60)
  const s = Math.floor(seconds % 60)
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${String(s).padStart(2, '0')}` : `${m}:${String(s).padStart(2, '0')}`
}
