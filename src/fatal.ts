// An error that ends a command with a one-line message and a documented exit code, never a stack trace.

export const EXIT = {
  OK: 0,
  /** Something went wrong at run time: the server refused us, a folder vanished, a disk filled up. */
  FAILURE: 1,
  /** The command line is wrong: an unknown flag, a bad host:port, a missing argument. */
  USAGE: 2,
  /** The environment is wrong: an unreadable folder, a port in use, a non-empty server folder. */
  ENVIRONMENT: 3,
  /** Authentication failed or the server is owned by another client. */
  REFUSED: 4,
  /** A safety check held changes back: the folder looks replaced or empty, or too much would be deleted. */
  HELD: 5,
} as const

export class FatalError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT.FAILURE,
  ) {
    super(message)
    this.name = 'FatalError'
  }
}
