// Wire paths (PROTOCOL.md 3.3): the one check every decoded or scanned path goes through, and a few helpers.
import { MAX_NAME_BYTES, MAX_PATH_BYTES } from './constants.js'
import { protocolError } from './errors.js'

// The server's own state lives in `.sfm/` below its root; that first segment is never mirrored.
export const RESERVED_NAME = '.sfm'

// A JS string is UTF-16. Node decodes names that are not UTF-8 to U+FFFD, so a lone surrogate can only come
// from a caller bug (or a decoder that kept one); either way it has no UTF-8 form and is not a wire path.
const LONE_SURROGATE = /\p{Cs}/u

// Returns why `name` cannot be one segment of a wire path, or null. The reasons fit on one line.
export function nameProblem(name: string): string | null {
  if (name === '') return 'empty segment'
  if (name === '.' || name === '..') return `segment is ${JSON.stringify(name)}`
  if (name.includes('/')) return 'segment contains "/"'
  if (name.includes('\0')) return 'contains a NUL byte'
  if (LONE_SURROGATE.test(name)) return 'not well-formed UTF-8'
  if (Buffer.byteLength(name, 'utf8') > MAX_NAME_BYTES) return `segment longer than ${MAX_NAME_BYTES} bytes`
  return null
}

// Returns why `path` breaks [M-PATH-1], or null. Checks run in the order of the rule's list.
export function pathProblem(path: string): string | null {
  if (path === '') return 'empty path' // [M-PATH-1] 1
  // A lone surrogate would be encoded as 3 bytes of U+FFFD, so test it before measuring.
  if (LONE_SURROGATE.test(path)) return 'not well-formed UTF-8' // 2
  if (Buffer.byteLength(path, 'utf8') > MAX_PATH_BYTES) return `longer than ${MAX_PATH_BYTES} bytes` // 1
  return decodedPathProblem(path)
}

/**
 * pathProblem() for a path decoded from well-formed UTF-8 of 1 to MAX_PATH_BYTES bytes: rules 1 and 2
 * hold already. A LISTING of 20,000 entries spent a third of its decoding on them.
 */
export function decodedPathProblem(path: string): string | null {
  if (path.includes('\0')) return 'contains a NUL byte' // 3
  if (path.startsWith('/')) return 'starts with "/"' // 4
  if (path.endsWith('/')) return 'ends with "/"' // 4
  if (path.includes('//')) return 'contains an empty segment ("//")' // 4
  const segments = path.split('/')
  for (const segment of segments) {
    if (segment === '.' || segment === '..') return `has a ${JSON.stringify(segment)} segment` // 5
    // Most segments are short; only count bytes when the UTF-16 length could exceed the limit.
    if (segment.length * 3 > MAX_NAME_BYTES && Buffer.byteLength(segment, 'utf8') > MAX_NAME_BYTES) {
      return `has a segment longer than ${MAX_NAME_BYTES} bytes` // 6
    }
  }
  if (segments[0] === RESERVED_NAME) return `first segment is ${JSON.stringify(RESERVED_NAME)} (reserved)` // 7
  return null
}

// Throws SFM_ERR_BAD_PATH unless `path` is a valid wire path [M-PATH-1].
export function checkWirePath(path: string, problem = pathProblem(path)): void {
  if (problem !== null) throw protocolError('SFM_ERR_BAD_PATH', `bad path ${describePath(path)}: ${problem}`)
}

export function isValidWirePath(path: string): boolean {
  return pathProblem(path) === null
}

// The wire path of the directory holding `path`, or null when `path` is a top-level entry (its parent is
// the mirror root, which has no wire path).
export function parentOf(path: string): string | null {
  const slash = path.lastIndexOf('/')
  return slash === -1 ? null : path.slice(0, slash)
}

// `name` inside `dir`; a null (or empty) `dir` stands for the mirror root. Does not validate.
export function joinWire(dir: string | null, name: string): string {
  return dir ? `${dir}/${name}` : name
}

// True when `path` is `ancestor` or lies below it. Compares whole segments: `ab` is not below `a`.
export function isSameOrBelow(path: string, ancestor: string): boolean {
  return path === ancestor || (path.length > ancestor.length && path.startsWith(ancestor) && path[ancestor.length] === '/')
}

// A short, printable, one-line rendering of a path for error messages: JSON escapes control characters,
// and a hostile 4 KiB path must not flood a log line.
export function describePath(path: string): string {
  const MAX_SHOWN = 80
  const shown = path.length > MAX_SHOWN ? `${path.slice(0, MAX_SHOWN)}…` : path
  return JSON.stringify(shown)
}
