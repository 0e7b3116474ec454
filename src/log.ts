// Log lines for people (text) or programs (--json), with levels. Under journald (JOURNAL_STREAM set)
// text lines carry no timestamp of their own: the journal adds one.

export type Level = 'debug' | 'info' | 'warn' | 'error'
const RANK: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 }

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void
  info(msg: string, fields?: Record<string, unknown>): void
  warn(msg: string, fields?: Record<string, unknown>): void
  error(msg: string, fields?: Record<string, unknown>): void
}

export interface LoggerOptions {
  level: Level
  json: boolean
  /** Where lines go; defaults to stderr. */
  write?: (line: string) => void
  timestamps?: boolean
}

function render(fields: Record<string, unknown>): string {
  const parts: string[] = []
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined) continue
    const s = typeof v === 'string' ? v : typeof v === 'bigint' ? v.toString() : JSON.stringify(v)
    parts.push(`${k}=${/[\s"]/.test(s) ? JSON.stringify(s) : s}`)
  }
  return parts.join(' ')
}

export function createLogger(opts: LoggerOptions): Logger {
  const write = opts.write ?? ((line: string) => process.stderr.write(line + '\n'))
  const timestamps = opts.timestamps ?? !process.env['JOURNAL_STREAM']
  const min = RANK[opts.level]
  const emit = (level: Level, msg: string, fields: Record<string, unknown> = {}) => {
    if (RANK[level] < min) return
    if (opts.json) {
      write(
        JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields }, (_k, v) =>
          typeof v === 'bigint' ? v.toString() : v,
        ),
      )
      return
    }
    const extra = render(fields)
    const prefix = timestamps ? `${new Date().toISOString()} ` : ''
    const tag = level === 'info' ? '' : `${level}: `
    write(`${prefix}${tag}${msg}${extra ? ' ' + extra : ''}`)
  }
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
  }
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} }
