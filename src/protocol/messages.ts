// The messages of protocol version 1 as values: one variant per wire type, tagged by `type`.
// Wire names stay uppercase in PROTOCOL.md; here HAVE? is `haveQuery`, AUTH_OK is `authOk`.

export type Hash = Buffer

export interface Hello {
  readonly type: 'hello'
  readonly minVersion: number
  readonly maxVersion: number
  readonly clientId: Buffer
  readonly clientNonce: Buffer
  readonly algos: readonly number[]
  readonly clientName: string
}

export interface Welcome {
  readonly type: 'welcome'
  readonly version: number
  readonly algo: number
  readonly authRequired: boolean
  readonly serverNonce: Buffer
  readonly mirrorId: Buffer
  readonly maxOpenUploads: number
  readonly maxInflight: number
  readonly keepaliveMs: number
}

export interface Auth {
  readonly type: 'auth'
  readonly mac: Buffer
}

export interface AuthOk {
  readonly type: 'authOk'
  readonly mac: Buffer
}

export interface Ping {
  readonly type: 'ping'
}

export interface Pong {
  readonly type: 'pong'
}

export interface ErrorMessage {
  readonly type: 'error'
  readonly requestId: number
  readonly code: number
  readonly message: string
}

export interface Ok {
  readonly type: 'ok'
  readonly requestId: number
}

export interface HaveQuery {
  readonly type: 'haveQuery'
  readonly requestId: number
  readonly hashes: readonly Hash[]
}

export interface HaveReply {
  readonly type: 'haveReply'
  readonly requestId: number
  readonly have: readonly boolean[]
}

export interface List {
  readonly type: 'list'
  readonly requestId: number
}

/** Asks for the mirror's digest (version 2 on). */
export interface DigestQuery {
  readonly type: 'digestQuery'
  readonly requestId: number
}

export interface DigestReply {
  readonly type: 'digestReply'
  readonly requestId: number
  /** The mirror digest (PROTOCOL.md 5.5): H bytes. */
  readonly digest: Hash
}

export interface FileEntry {
  readonly kind: 'file'
  readonly path: string
  readonly mode: number
  readonly mtimeNs: bigint
  readonly size: number
  readonly contentId: Hash
}

export interface DirEntry {
  readonly kind: 'dir'
  readonly path: string
  readonly mode: number
  readonly mtimeNs: bigint
}

export interface SymlinkEntry {
  readonly kind: 'symlink'
  readonly path: string
  readonly mode: number
  readonly mtimeNs: bigint
  readonly target: string
}

export type ListEntry = FileEntry | DirEntry | SymlinkEntry

export interface Listing {
  readonly type: 'listing'
  readonly requestId: number
  readonly last: boolean
  readonly entries: readonly ListEntry[]
}

export interface Chunk {
  readonly type: 'chunk'
  readonly uploadId: number
  readonly hash: Hash
  readonly data: Buffer
}

export interface Ref {
  readonly hash: Hash
  readonly length: number
}

export interface Refs {
  readonly type: 'refs'
  readonly uploadId: number
  readonly refs: readonly Ref[]
}

export interface Commit {
  readonly type: 'commit'
  readonly uploadId: number
  readonly path: string
  readonly mode: number
  readonly mtimeNs: bigint
  readonly size: number
  readonly contentId: Hash
}

export interface Abort {
  readonly type: 'abort'
  readonly uploadId: number
}

export interface Delete {
  readonly type: 'delete'
  readonly requestId: number
  readonly path: string
}

export interface Mkdir {
  readonly type: 'mkdir'
  readonly requestId: number
  readonly path: string
  readonly mode: number
  readonly mtimeNs: bigint
}

export interface Symlink {
  readonly type: 'symlink'
  readonly requestId: number
  readonly path: string
  readonly target: string
  readonly mtimeNs: bigint
}

export interface Rename {
  readonly type: 'rename'
  readonly requestId: number
  readonly from: string
  readonly to: string
}

export interface Setattr {
  readonly type: 'setattr'
  readonly requestId: number
  readonly path: string
  readonly mode: number
  readonly mtimeNs: bigint
}

export type Message =
  | Hello
  | Welcome
  | Auth
  | AuthOk
  | Ping
  | Pong
  | ErrorMessage
  | Ok
  | HaveQuery
  | HaveReply
  | List
  | Listing
  | DigestQuery
  | DigestReply
  | Chunk
  | Refs
  | Commit
  | Abort
  | Delete
  | Mkdir
  | Symlink
  | Rename
  | Setattr

export type MessageTag = Message['type']

/** Requests that change the mirror; the server applies and answers them in order [M-SEM-4]. */
export type Change = Commit | Delete | Mkdir | Symlink | Rename | Setattr

/** Messages a client sends, and messages a server sends (section 7's direction column). */
export type ClientMessage =
  | Hello
  | Auth
  | Ping
  | Pong
  | ErrorMessage
  | HaveQuery
  | List
  | DigestQuery
  | Chunk
  | Refs
  | Commit
  | Abort
  | Delete
  | Mkdir
  | Symlink
  | Rename
  | Setattr
export type ServerMessage = Welcome | AuthOk | Ping | Pong | ErrorMessage | Ok | HaveReply | Listing | DigestReply
