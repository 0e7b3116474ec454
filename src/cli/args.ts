// Shared command-line plumbing: mri with every flag declared, and the checks that turn strings into
// typed options with one-line errors.
import { readFileSync } from 'node:fs'
import mri from 'mri'
import { EXIT, FatalError } from '../fatal.js'
import { tokenBytes } from '../protocol/auth.js'
import { createLogger, type Level, type Logger } from '../log.js'

export interface FlagSpec {
  boolean: string[]
  string: string[]
  /** String flags that may be given more than once (their value is then a list). */
  repeatable?: string[]
  alias?: Record<string, string>
}

export type Parsed = mri.Argv<Record<string, unknown>>

/** Parses argv; an unknown flag is a usage error, never silently ignored. */
export function parseArgs(argv: string[], spec: FlagSpec): Parsed {
  let unknown: string | null = null
  // mri's strict mode knows only the keys of `alias`: every declared flag gets an entry there
  const alias: Record<string, string[]> = {}
  for (const name of [...spec.boolean, ...spec.string]) alias[name] = []
  for (const [short, long] of Object.entries(spec.alias ?? {})) alias[long] = [...(alias[long] ?? []), short]
  const parsed = mri(argv, {
    boolean: spec.boolean,
    string: spec.string,
    alias,
    unknown: (flag) => {
      unknown ??= flag
      return false
    },
  })
  if (unknown !== null) throw new FatalError(`unknown option ${unknown} (see --help)`, EXIT.USAGE)
  for (const name of spec.string) {
    const v = parsed[name]
    if (Array.isArray(v) && !spec.repeatable?.includes(name)) throw new FatalError(`--${name} given more than once`, EXIT.USAGE)
    if (v === '' || (Array.isArray(v) && v.includes(''))) throw new FatalError(`--${name} needs a value`, EXIT.USAGE)
  }
  return parsed
}

/** A TCP port; 0 (let the system choose) only where `allowZero` says so. */
export function parsePort(text: string, what: string, allowZero = false): number {
  const min = allowZero ? 0 : 1
  if (!/^\d{1,5}$/.test(text) || Number(text) < min || Number(text) > 65535) {
    throw new FatalError(`${what} must be a port number from ${min} to 65535, not ${JSON.stringify(text)}`, EXIT.USAGE)
  }
  return Number(text)
}

/** `host:port`, `[v6]:port`. */
export function parseHostPort(text: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:([^:]*)$/.exec(text) ?? /^([^:[\]]+):([^:]*)$/.exec(text)
  if (!m) throw new FatalError(`expected <host>:<port> (for example 192.0.2.10:7070 or [::1]:7070), not ${JSON.stringify(text)}`, EXIT.USAGE)
  return { host: m[1]!, port: parsePort(m[2]!, 'the port') }
}

/** The shared token from --token-file or SFM_TOKEN, or null; white space around it is ignored. */
export function readToken(file: string | undefined, env: NodeJS.ProcessEnv): Buffer | null {
  let secret: string | undefined
  if (file !== undefined) {
    try {
      secret = readFileSync(file, 'utf8')
    } catch (err) {
      throw new FatalError(`cannot read token file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, EXIT.ENVIRONMENT)
    }
    if (tokenBytes(secret).length === 0) throw new FatalError(`token file ${file} is empty`, EXIT.ENVIRONMENT)
  } else if (env['SFM_TOKEN'] !== undefined && tokenBytes(env['SFM_TOKEN']).length > 0) {
    secret = env['SFM_TOKEN']
  }
  return secret === undefined ? null : tokenBytes(secret)
}

export function readFileArg(file: string, what: string): Buffer {
  try {
    return readFileSync(file)
  } catch (err) {
    throw new FatalError(`cannot read ${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, EXIT.ENVIRONMENT)
  }
}

/** A positive whole number given in a flag. */
export function parseCount(text: unknown, flag: string): number | undefined {
  if (text === undefined) return undefined
  if (!/^[1-9]\d{0,12}$/.test(String(text))) throw new FatalError(`${flag} must be a positive whole number, not ${JSON.stringify(String(text))}`, EXIT.USAGE)
  return Number(text)
}

export function mib(n: number | undefined): number | undefined {
  return n === undefined ? undefined : n * 1024 * 1024
}

export function loggerFrom(args: Parsed, write?: (line: string) => void): Logger {
  const level: Level = args['quiet'] ? 'warn' : args['verbose'] ? 'debug' : 'info'
  return createLogger({ level, json: Boolean(args['json']), write })
}

export const OUTPUT_FLAGS = ['quiet', 'verbose', 'json', 'help', 'version']
export const OUTPUT_ALIASES = { q: 'quiet', v: 'verbose', h: 'help', V: 'version' }
