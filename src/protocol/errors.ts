// ProtocolError: the one error type the codec, the framer and the state machines throw.
import { ERROR_CODE, type ErrorName } from './constants.js'

export interface ErrorContext {
  type?: number
  offset?: number
}

export class ProtocolError extends Error {
  readonly code: ErrorName
  readonly context: ErrorContext

  constructor(code: ErrorName, message: string, context: ErrorContext = {}) {
    super(message)
    this.name = 'ProtocolError'
    this.code = code
    this.context = context
  }

  get wireCode(): number {
    return ERROR_CODE[this.code]
  }
}

export function protocolError(code: ErrorName, message: string, context?: ErrorContext): ProtocolError {
  return new ProtocolError(code, message, context)
}
