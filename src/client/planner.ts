// What to send: compares the folder (local entries) with the mirror (remote entries) for a set of
// paths and returns the changes in an order the server can apply one after the other:
//   1. structure, shallowest first: MKDIR for new directories and RENAME of moved entries;
//   2. content: uploads, symlinks, attribute changes of files and symlinks;
//   3. DELETE of what the folder no longer has (after the uploads, so a moved or copied file can
//      still draw on the old one);
//   4. directory attributes last, because every change inside a directory moves its mtime.
// Pure: no disk, no network.
import type { LocalEntry } from './scan.js'
import { isBelowAny, type RemoteEntry } from './remote.js'
import { appliedMode } from '../protocol/modes.js'
import { isSameOrBelow, parentOf } from '../protocol/paths.js'

export type Op =
  | { kind: 'mkdir'; path: string; mode: number; mtimeNs: bigint }
  | { kind: 'rename'; from: string; to: string }
  | { kind: 'upload'; path: string; local: LocalEntry }
  | { kind: 'symlink'; path: string; target: string; mtimeNs: bigint }
  | { kind: 'setattr'; path: string; mode: number; mtimeNs: bigint }
  | { kind: 'delete'; path: string }
  | { kind: 'dirattr'; path: string; mode: number; mtimeNs: bigint }

export interface PlanInput {
  /** Paths to compare; a path with no local entry is absent from the folder. */
  candidates: ReadonlySet<string>
  local: ReadonlyMap<string, LocalEntry>
  remote: { get(path: string): RemoteEntry | undefined }
  /** Moves already recognised (same inode, or same content), applied before anything else. */
  renames?: ReadonlyArray<{ from: string; to: string }>
}

export function plan(input: PlanInput): Op[] {
  const { local, remote } = input
  const structure: Op[] = []
  const content: Op[] = []
  const deletes: string[] = []
  const dirs = new Map<string, LocalEntry>() // directories whose attributes may need setting at the end
  const touchedDirs = new Set<string>() // directories in which an entry changes
  const renamedTo = new Map<string, string>() // target -> source
  const renamedFrom = new Set<string>()
  // local directories whose listing failed: their contents are unknown, never taken as deleted
  const unreadable: string[] = []
  for (const [p, e] of local) if (e.unreadable) unreadable.push(p)

  for (const r of input.renames ?? []) {
    structure.push({ kind: 'rename', from: r.from, to: r.to })
    renamedTo.set(r.to, r.from)
    renamedFrom.add(r.from)
    touch(touchedDirs, r.from)
    touch(touchedDirs, r.to)
  }

  // The remote entry a path will have once the renames are applied.
  const remoteAfterRenames = (path: string): RemoteEntry | undefined => {
    for (const [to, from] of renamedTo) {
      if (isSameOrBelow(path, to)) {
        const e = remote.get(from + path.slice(to.length))
        return e && { ...e, path }
      }
    }
    if ([...renamedFrom].some((from) => isSameOrBelow(path, from))) return undefined
    return remote.get(path)
  }

  for (const path of input.candidates) {
    const l = local.get(path)
    const r = remoteAfterRenames(path)
    if (!l) {
      if (r && !renamedFrom.has(path) && !isBelowAny(path, unreadable)) {
        deletes.push(path)
        touch(touchedDirs, path)
      }
      continue
    }
    if (l.kind === 'dir') dirs.set(path, l)
    const sameKind = r !== undefined && r.kind === l.kind
    switch (l.kind) {
      case 'dir':
        if (!sameKind) {
          structure.push({ kind: 'mkdir', path, mode: l.mode, mtimeNs: l.mtimeNs })
          touch(touchedDirs, path)
          touchedDirs.add(path)
        }
        break
      case 'file':
        if (!sameKind || r.kind !== 'file' || r.size !== l.size || r.mtimeNs !== l.mtimeNs) {
          content.push({ kind: 'upload', path, local: l })
          touch(touchedDirs, path)
        } else if (r.mode !== appliedMode('file', l.mode)) {
          content.push({ kind: 'setattr', path, mode: l.mode, mtimeNs: l.mtimeNs })
        }
        break
      case 'symlink':
        if (!sameKind || r.kind !== 'symlink' || r.target !== l.target) {
          content.push({ kind: 'symlink', path, target: l.target!, mtimeNs: l.mtimeNs })
          touch(touchedDirs, path)
        } else if (r.mtimeNs !== l.mtimeNs) {
          content.push({ kind: 'setattr', path, mode: 0, mtimeNs: l.mtimeNs })
        }
        break
    }
  }

  // Shallowest first, so every parent exists before its children; a rename counts at its target.
  const depthOf = (op: Op) => depth(op.kind === 'rename' ? op.to : (op as { path: string }).path)
  structure.sort((a, b) => depthOf(a) - depthOf(b))

  // Deleting a directory deletes its subtree: only the topmost deletes are sent.
  deletes.sort((a, b) => depth(a) - depth(b))
  const topDeletes: string[] = []
  for (const p of deletes) if (!isBelowAny(p, topDeletes)) topDeletes.push(p)

  const attrs: Op[] = []
  for (const [path, l] of dirs) {
    const r = remoteAfterRenames(path)
    const stale = !r || r.kind !== 'dir' || r.mode !== appliedMode('dir', l.mode) || r.mtimeNs !== l.mtimeNs
    if (stale || touchedDirs.has(path)) attrs.push({ kind: 'dirattr', path, mode: l.mode, mtimeNs: l.mtimeNs })
  }
  // deepest first: not needed for correctness (a child's attributes do not move its parent's mtime),
  // but it keeps the order stable and readable in logs
  attrs.sort((a, b) => depthOf(b) - depthOf(a))

  return [...structure, ...content, ...topDeletes.map((path): Op => ({ kind: 'delete', path })), ...attrs]
}

function touch(dirs: Set<string>, path: string): void {
  const parent = parentOf(path)
  if (parent !== null) dirs.add(parent)
}

function depth(path: string): number {
  let n = 0
  for (let i = 0; i < path.length; i++) if (path.charCodeAt(i) === 47) n++
  return n
}
