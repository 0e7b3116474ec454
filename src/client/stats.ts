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
  /** What the current reconcile of the whole tree set out to upload (for progress). */
  plannedFiles = 0
  plannedBytes = 0
  /** files and bytes when that reconcile started, to count its progress from. */
  private planBase = { files: 0, bytes: 0, at: Date.now() }

  /** A reconcile planned `files` uploads of `bytes` in all. */
  plan(files: number, bytes: number): void {
    this.plannedFiles = files
    this.plannedBytes = bytes
    this.planBase = { files: this.files, bytes: this.bytes, at: Date.now() }
  }

  /** Progress of the current reconcile: done and total, rate and time left. */
  progress() {
    const files = this.files - this.planBase.files
    const bytes = this.bytes - this.planBase.bytes
    const seconds = (Date.now() - this.planBase.at) / 1000
    const rate = seconds > 0 ? bytes / seconds : 0
    const left = Math.max(0, this.plannedBytes - bytes)
    return {
      files,
      totalFiles: this.plannedFiles,
      bytes,
      totalBytes: this.plannedBytes,
      bytesPerSecond: Math.round(rate),
      etaSeconds: rate > 0 ? Math.round(left / rate) : null,
    }
  }

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
