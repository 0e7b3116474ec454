// Request-level failures of the mirror (PROTOCOL.md 9.2, codes 32 and above): the request fails, the
// connection stays open.
import type { ErrorName } from '../protocol/constants.js'

export class MirrorError extends Error {
  constructor(
    readonly code: ErrorName,
    message: string,
  ) {
    super(message)
    this.name = 'MirrorError'
  }
}

/** Maps a file system error to the request error a client can act on. */
export function fromFsError(err: unknown, what: string): MirrorError {
  if (err instanceof MirrorError) return err
  const e = err as NodeJS.ErrnoException
  switch (e.code) {
    case 'ENOSPC':
    case 'EDQUOT':
      return new MirrorError('SFM_ERR_NO_SPACE', `no space left on the server's disk (${what})`)
    case 'ENOTDIR':
    case 'ELOOP':
      return new MirrorError('SFM_ERR_NOT_DIR', `a parent of ${what} is not a directory`)
    case 'ENOENT':
      return new MirrorError('SFM_ERR_NOT_FOUND', `${what} does not exist`)
    default:
      return new MirrorError('SFM_ERR_IO', `${what}: ${e.code ?? ''} ${e.message}`.trim())
  }
}
