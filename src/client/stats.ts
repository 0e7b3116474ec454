// What a client has done, for the summary after a reconcile and on demand.

export class SyncStats {
  /** Files uploaded (committed). */
  files = 0
  /** Bytes of those files. */
  bytes = 0
  /** Bytes of file data sent as CHUNK. */
  dataBytesSent = 0
  /** Bytes on the wire in both directions, frames included. */
  wireBytesSent = 0
  wireBytesReceived = 0
  /** Other changes: mkdir, symlink, rename, delete, attributes. */
  changes = 0
  deletes = 0
  renames = 0
  failures = 0
  readonly startedAt = Date.now()

  /** Bytes that did not have to be sent because the server already had them. */
  get bytesSaved(): number {
    return Math.max(0, this.bytes - this.dataBytesSent)
  }

  snapshot() {
    return {
      files: this.files,
      bytes: this.bytes,
      dataBytesSent: this.dataBytesSent,
      wireBytesSent: this.wireBytesSent,
      wireBytesReceived: this.wireBytesReceived,
      bytesSaved: this.bytesSaved,
      changes: this.changes,
      deletes: this.deletes,
      renames: this.renames,
      failures: this.failures,
      seconds: (Date.now() - this.startedAt) / 1000,
    }
  }
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let u = 0
  let v = n
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024
    u++
  }
  return `${u === 0 ? v : v.toFixed(v < 10 ? 2 : 1)} ${units[u]}`
}
