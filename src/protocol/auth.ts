// Challenge-response over HMAC-SHA-256 (PROTOCOL.md 10): each side proves it knows the token
// without sending it, bound to both nonces and the client id so a recorded exchange is useless later.
import { createHmac, timingSafeEqual } from 'node:crypto'

const CLIENT_LABEL = Buffer.from('sfm-v1 client', 'ascii')
const SERVER_LABEL = Buffer.from('sfm-v1 server', 'ascii')

export interface AuthBinding {
  clientNonce: Buffer
  serverNonce: Buffer
  clientId: Buffer
}

function mac(token: Buffer, label: Buffer, b: AuthBinding): Buffer {
  return createHmac('sha256', token).update(label).update(b.clientNonce).update(b.serverNonce).update(b.clientId).digest()
}

export const clientMac = (token: Buffer, b: AuthBinding): Buffer => mac(token, CLIENT_LABEL, b)
export const serverMac = (token: Buffer, b: AuthBinding): Buffer => mac(token, SERVER_LABEL, b)

/** Compares MACs in constant time [M-AUTH-1]. */
export function macMatches(expected: Buffer, got: Buffer): boolean {
  return expected.length === got.length && timingSafeEqual(expected, got)
}

/**
 * The token as the protocol uses it: the secret's UTF-8 bytes without leading and trailing ASCII white
 * space (PROTOCOL.md 10), so `echo secret > file` works. Unicode spaces are part of the secret.
 */
export function tokenBytes(secret: string): Buffer {
  return Buffer.from(secret.replace(/^[ \t\n\v\f\r]+|[ \t\n\v\f\r]+$/g, ''), 'utf8')
}
