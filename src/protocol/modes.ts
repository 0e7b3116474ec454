// Which permission bits a mirror entry gets (PROTOCOL.md 3.4): the server applies the read, write and
// execute bits only, never set-user-id, set-group-id or sticky; and every directory keeps its owner's
// read, write and search bits so the server can manage what is inside. LISTING reports the applied
// mode, so a client compares the applied form of what it has.

export const MODE_BITS = 0o777
export const DIR_OWNER_BITS = 0o700

export function appliedMode(kind: 'file' | 'dir' | 'symlink', mode: number): number {
  if (kind === 'symlink') return 0
  return kind === 'dir' ? (mode & MODE_BITS) | DIR_OWNER_BITS : mode & MODE_BITS
}
