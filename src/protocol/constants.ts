// Wire constants of sfm protocol versions 1 and 2. Every value here is in PROTOCOL.md (sections 4, 5, 7, 9,
// 12, 14).

export const MAGIC = Buffer.from([0x89, 0x53, 0x46, 0x4d]) // "\x89SFM" [M-LIFE-1]
/** The highest version sfm speaks; it speaks every version from MIN_PROTOCOL_VERSION up to it. */
export const PROTOCOL_VERSION = 2
export const MIN_PROTOCOL_VERSION = 1
/** The first version with DIGEST? and DIGEST_REPLY (PROTOCOL.md 14). */
export const DIGEST_VERSION = 2
export const FRAME_HEADER_BYTES = 5 // u32 length + u8 type

export const HASH_ALGO = { XXH3_128: 1 } as const
export const HASH_BYTES = 16 // H for XXH3-128, the only algorithm of version 1
export const NONCE_BYTES = 16
export const ID_BYTES = 16 // client_id, mirror_id
export const MAC_BYTES = 32 // HMAC-SHA-256

export const MAX_FRAME_BYTES = 1_049_600
export const MAX_HANDSHAKE_FRAME_BYTES = 1_024
export const MAX_CHUNK_BYTES = 1_048_576
export const MAX_HASHES = 4_096
export const MAX_PATH_BYTES = 4_095
export const MAX_NAME_BYTES = 255
export const MAX_TEXT_BYTES = 1_024
export const MAX_CLIENT_NAME_BYTES = 255
export const MAX_ALGOS = 8
export const MAX_FANOUT = 512
export const MAX_SAFE_U64 = Number.MAX_SAFE_INTEGER // [M-CONV-1]
export const MAX_MODE = 0o7777 // [M-CONV-3]
export const HELLO_TIMEOUT_MS = 10_000
export const MIN_KEEPALIVE_MS = 1_000

export const WELCOME_AUTH_REQUIRED = 0x01
export const LISTING_LAST = 0x01

export const MESSAGE_TYPE = {
  HELLO: 0x01,
  WELCOME: 0x02,
  AUTH: 0x03,
  AUTH_OK: 0x04,
  PING: 0x05,
  PONG: 0x06,
  ERROR: 0x07,
  OK: 0x08,
  HAVE_QUERY: 0x10,
  HAVE_REPLY: 0x11,
  LIST: 0x12,
  LISTING: 0x13,
  DIGEST_QUERY: 0x16,
  DIGEST_REPLY: 0x17,
  CHUNK: 0x20,
  REFS: 0x21,
  COMMIT: 0x22,
  ABORT: 0x23,
  DELETE: 0x30,
  MKDIR: 0x31,
  SYMLINK: 0x32,
  RENAME: 0x33,
  SETATTR: 0x34,
} as const
export type MessageTypeCode = (typeof MESSAGE_TYPE)[keyof typeof MESSAGE_TYPE]

export const ENTRY_KIND = { FILE: 1, DIR: 2, SYMLINK: 3 } as const

// Codes below 32 end the connection; 32 and above fail one request (PROTOCOL.md 9.2).
export const ERROR_CODE = {
  SFM_ERR_BAD_MAGIC: 1,
  SFM_ERR_VERSION: 2,
  SFM_ERR_HASH_ALGO: 3,
  SFM_ERR_FRAME_TOO_LARGE: 4,
  SFM_ERR_FRAME_TOO_SMALL: 5,
  SFM_ERR_UNKNOWN_TYPE: 6,
  SFM_ERR_MALFORMED: 7,
  SFM_ERR_TRAILING_BYTES: 8,
  SFM_ERR_BAD_PATH: 9,
  SFM_ERR_UNEXPECTED: 10,
  SFM_ERR_AUTH_FAILED: 11,
  SFM_ERR_AUTH_REQUIRED: 12,
  SFM_ERR_BUSY: 13,
  SFM_ERR_TIMEOUT: 14,
  SFM_ERR_LIMIT: 15,
  SFM_ERR_BAD_ID: 16,
  SFM_ERR_SHUTDOWN: 17,
  SFM_ERR_MISSING: 32,
  SFM_ERR_HASH_MISMATCH: 33,
  SFM_ERR_CONTENT_MISMATCH: 34,
  SFM_ERR_NOT_DIR: 35,
  SFM_ERR_NOT_FOUND: 36,
  SFM_ERR_NO_SPACE: 37,
  SFM_ERR_IO: 38,
  SFM_ERR_INVALID: 39,
} as const
export type ErrorName = keyof typeof ERROR_CODE
export const FIRST_REQUEST_ERROR_CODE = 32

const ERROR_NAME_BY_CODE = new Map<number, ErrorName>(
  Object.entries(ERROR_CODE).map(([name, code]) => [code, name as ErrorName]),
)

/** The name of a wire error code, or a generic name for codes this version does not know [M-ERROR-1]. */
export function errorName(code: number): ErrorName | 'SFM_ERR_UNKNOWN' {
  return ERROR_NAME_BY_CODE.get(code) ?? 'SFM_ERR_UNKNOWN'
}

export function isConnectionError(code: number): boolean {
  return code < FIRST_REQUEST_ERROR_CODE
}
