// plan() is pure: each case gives the folder (local entries), the mirror (remote entries), the paths to
// compare and the recognised moves, and expects the exact list of operations in the order they are sent.
import t from 'tap'
import { plan, type Op } from '../src/client/planner.js'
import { RemoteTree, type RemoteEntry } from '../src/client/remote.js'
import type { LocalEntry } from '../src/client/scan.js'
import { hashKey } from '../src/hash.js'

const NO_ID = Buffer.alloc(16)
let nextIno = 1n

function lfile(size: number, mtimeNs: bigint, mode = 0o644): LocalEntry {
  return { kind: 'file', mode, mtimeNs, size, ino: nextIno++, ctimeNs: mtimeNs }
}
function ldir(mtimeNs: bigint, mode = 0o755, unreadable = false): LocalEntry {
  const e: LocalEntry = { kind: 'dir', mode, mtimeNs, size: 4096, ino: nextIno++, ctimeNs: mtimeNs }
  if (unreadable) e.unreadable = true
  return e
}
function llink(target: string, mtimeNs: bigint): LocalEntry {
  return { kind: 'symlink', mode: 0o777, mtimeNs, size: target.length, ino: nextIno++, ctimeNs: mtimeNs, target }
}

type RemoteSpec = RemoteEntry extends infer E ? (E extends RemoteEntry ? Omit<E, 'path'> : never) : never
function rfile(size: number, mtimeNs: bigint, mode = 0o644): RemoteSpec {
  return { kind: 'file', mode, mtimeNs, size, contentKey: hashKey(NO_ID) }
}
function rdir(mtimeNs: bigint, mode = 0o755): RemoteSpec {
  return { kind: 'dir', mode, mtimeNs }
}
function rlink(target: string, mtimeNs: bigint): RemoteSpec {
  return { kind: 'symlink', mode: 0, mtimeNs, target }
}

/** One line per operation, so that a failing case shows a readable diff. */
function show(op: Op): string {
  switch (op.kind) {
    case 'mkdir':
      return `mkdir ${op.path} ${op.mode.toString(8)} @${op.mtimeNs}`
    case 'rename':
      return `rename ${op.from} > ${op.to}`
    case 'upload':
      return `upload ${op.path}`
    case 'symlink':
      return `symlink ${op.path} > ${op.target} @${op.mtimeNs}`
    case 'setattr':
      return `setattr ${op.path} ${op.mode.toString(8)} @${op.mtimeNs}`
    case 'delete':
      return `delete ${op.path}`
    case 'dirattr':
      return `dirattr ${op.path} ${op.mode.toString(8)} @${op.mtimeNs}`
  }
}

interface Case {
  name: string
  local: Record<string, LocalEntry>
  remote: Record<string, RemoteSpec>
  /** Defaults to every local and remote path, in the order written. */
  candidates?: string[]
  renames?: Array<{ from: string; to: string }>
  expect: string[]
}

function remoteTree(spec: Record<string, RemoteSpec>): RemoteTree {
  const tree = new RemoteTree()
  for (const [path, e] of Object.entries(spec)) tree.set({ ...e, path } as RemoteEntry)
  return tree
}

function run(c: Case): Op[] {
  const local = new Map(Object.entries(c.local))
  const candidates = new Set(c.candidates ?? [...Object.keys(c.local), ...Object.keys(c.remote)])
  return plan({ candidates, local, remote: remoteTree(c.remote), renames: c.renames })
}

const cases: Case[] = [
  {
    name: 'an unchanged tree needs nothing',
    local: { d: ldir(10n), 'd/f': lfile(3, 5n), l: llink('d/f', 7n) },
    remote: { d: rdir(10n), 'd/f': rfile(3, 5n), l: rlink('d/f', 7n) },
    expect: [],
  },
  {
    name: 'a new directory is made before the files inside it are uploaded, and gets its attributes at the end',
    local: { a: ldir(10n, 0o750), 'a/x': lfile(1, 1n), 'a/y': lfile(2, 2n) },
    remote: {},
    candidates: ['a/x', 'a/y', 'a'],
    expect: ['mkdir a 750 @10', 'upload a/x', 'upload a/y', 'dirattr a 750 @10'],
  },
  {
    name: 'new nested directories are made shallowest first; their attributes are set deepest first',
    local: { a: ldir(1n), 'a/b': ldir(2n), 'a/b/c': ldir(3n), z: ldir(4n) },
    remote: {},
    candidates: ['a/b/c', 'a/b', 'z', 'a'],
    expect: [
      'mkdir z 755 @4',
      'mkdir a 755 @1',
      'mkdir a/b 755 @2',
      'mkdir a/b/c 755 @3',
      'dirattr a/b/c 755 @3',
      'dirattr a/b 755 @2',
      'dirattr z 755 @4',
      'dirattr a 755 @1',
    ],
  },
  {
    name: 'deleting a directory tree sends only the topmost DELETE',
    local: {},
    remote: { d: rdir(1n), 'd/e': rdir(1n), 'd/e/f': rfile(1, 1n), 'd/g': rfile(1, 1n), 'd/e/h': rlink('x', 1n) },
    candidates: ['d/e/f', 'd/g', 'd/e/h', 'd/e', 'd'],
    expect: ['delete d'],
  },
  {
    name: 'deleting two subtrees whose names share a prefix sends both',
    local: {},
    remote: { a: rdir(1n), 'a/x': rfile(1, 1n), ab: rdir(1n), 'ab/y': rfile(1, 1n) },
    expect: ['delete a', 'delete ab'],
  },
  {
    name: 'deletes come after uploads, whatever the order of the candidates',
    local: { new: lfile(5, 5n) },
    remote: { old: rfile(5, 5n) },
    candidates: ['old', 'new'],
    expect: ['upload new', 'delete old'],
  },
  {
    name: 'a file whose size differs is uploaded',
    local: { f: lfile(4, 5n) },
    remote: { f: rfile(3, 5n) },
    expect: ['upload f'],
  },
  {
    name: 'a file whose mtime differs is uploaded',
    local: { f: lfile(3, 6n) },
    remote: { f: rfile(3, 5n) },
    expect: ['upload f'],
  },
  {
    name: 'a file whose mode alone differs gets SETATTR with its mode and mtime, and its directory is not touched',
    local: { d: ldir(9n), 'd/f': lfile(3, 5n, 0o600) },
    remote: { d: rdir(9n), 'd/f': rfile(3, 5n, 0o644) },
    expect: ['setattr d/f 600 @5'],
  },
  {
    name: 'a symlink whose target changed is sent again',
    local: { l: llink('new', 7n) },
    remote: { l: rlink('old', 7n) },
    expect: ['symlink l > new @7'],
  },
  {
    name: 'a symlink whose mtime alone changed gets SETATTR with mode 0',
    local: { l: llink('same', 8n) },
    remote: { l: rlink('same', 7n) },
    expect: ['setattr l 0 @8'],
  },
  {
    name: 'a new symlink is sent',
    local: { l: llink('/abs/target', 8n) },
    remote: {},
    expect: ['symlink l > /abs/target @8'],
  },
  {
    name: 'a file that became a directory is made with MKDIR, and its new contents uploaded',
    local: { x: ldir(4n), 'x/y': lfile(1, 1n) },
    remote: { x: rfile(10, 3n) },
    expect: ['mkdir x 755 @4', 'upload x/y', 'dirattr x 755 @4'],
  },
  {
    name: 'a directory that became a file is uploaded',
    local: { x: lfile(10, 3n) },
    remote: { x: rdir(4n) },
    expect: ['upload x'],
  },
  {
    name: 'a symlink that became a file is uploaded, a file that became a symlink is sent as SYMLINK',
    local: { a: lfile(1, 1n), b: llink('t', 2n) },
    remote: { a: rlink('t', 1n), b: rfile(1, 2n) },
    expect: ['upload a', 'symlink b > t @2'],
  },
  {
    name: 'a symlink that became a directory is made with MKDIR',
    local: { a: ldir(1n) },
    remote: { a: rlink('t', 1n) },
    expect: ['mkdir a 755 @1', 'dirattr a 755 @1'],
  },
  {
    name: 'an entry whose state on the server is unknown matches nothing',
    local: { f: lfile(1, 1n), d: ldir(2n), l: llink('t', 3n) },
    remote: { f: { kind: 'unknown' }, d: { kind: 'unknown' }, l: { kind: 'unknown' } },
    expect: ['mkdir d 755 @2', 'upload f', 'symlink l > t @3', 'dirattr d 755 @2'],
  },
  {
    name: 'an unknown entry the folder does not have is deleted',
    local: {},
    remote: { f: { kind: 'unknown' } },
    expect: ['delete f'],
  },
  {
    name: 'a local directory marked unreadable never causes deletes below it',
    local: { u: ldir(5n, 0o755, true) },
    remote: { u: rdir(5n), 'u/a': rfile(1, 1n), 'u/b': rdir(1n), 'u/b/c': rfile(1, 1n), ux: rfile(1, 1n) },
    expect: ['delete ux'],
  },
  {
    name: 'a nested unreadable directory protects only its own subtree',
    local: { p: ldir(5n), 'p/u': ldir(5n, 0o755, true) },
    remote: { p: rdir(5n), 'p/u': rdir(5n), 'p/u/a': rfile(1, 1n), 'p/gone': rfile(1, 1n) },
    expect: ['delete p/gone', 'dirattr p 755 @5'],
  },
  {
    name: 'a parent whose child changed gets its attributes set even if its own mtime matches',
    local: { d: ldir(10n), 'd/f': lfile(2, 2n), 'd/e': ldir(11n), 'd/e/g': lfile(1, 1n) },
    remote: { d: rdir(10n), 'd/f': rfile(1, 1n), 'd/e': rdir(11n), 'd/e/g': rfile(1, 1n) },
    expect: ['upload d/f', 'dirattr d 755 @10'],
  },
  {
    name: 'a parent whose child was deleted gets its attributes set',
    local: { d: ldir(10n) },
    remote: { d: rdir(10n), 'd/gone': rfile(1, 1n) },
    expect: ['delete d/gone', 'dirattr d 755 @10'],
  },
  {
    name: 'a parent whose child changed type gets its attributes set',
    local: { d: ldir(10n), 'd/x': llink('t', 1n) },
    remote: { d: rdir(10n), 'd/x': rfile(1, 1n) },
    expect: ['symlink d/x > t @1', 'dirattr d 755 @10'],
  },
  {
    name: 'a directory whose own mode or mtime differs gets its attributes set',
    local: { a: ldir(10n, 0o700), b: ldir(11n) },
    remote: { a: rdir(10n), b: rdir(10n) },
    expect: ['dirattr a 700 @10', 'dirattr b 755 @11'],
  },
  {
    name: 'renames come first, in structure order by the depth of their targets',
    local: { n: ldir(1n), 'n/deep': lfile(1, 1n), top: lfile(2, 2n), 'p/q/r': lfile(3, 3n), p: ldir(4n), 'p/q': ldir(5n) },
    remote: { 'old/deep': rfile(1, 1n), old: rdir(1n), was: rfile(2, 2n), 'm/r': rfile(3, 3n), m: rdir(6n), p: rdir(4n), 'p/q': rdir(5n) },
    candidates: ['n', 'n/deep', 'top', 'p/q/r', 'was', 'old', 'old/deep', 'm/r', 'm', 'p', 'p/q'],
    renames: [
      { from: 'm/r', to: 'p/q/r' },
      { from: 'old/deep', to: 'n/deep' },
      { from: 'was', to: 'top' },
    ],
    expect: [
      'rename was > top',
      'mkdir n 755 @1',
      'rename old/deep > n/deep',
      'rename m/r > p/q/r',
      'delete old',
      'delete m',
      'dirattr p/q 755 @5',
      'dirattr n 755 @1',
    ],
  },
  {
    name: 'a moved directory is compared with what it brings along: no upload when equal',
    local: { new: ldir(10n), 'new/f': lfile(3, 5n), 'new/s': ldir(11n), 'new/s/g': lfile(4, 6n), 'new/l': llink('f', 7n) },
    remote: { old: rdir(10n), 'old/f': rfile(3, 5n), 'old/s': rdir(11n), 'old/s/g': rfile(4, 6n), 'old/l': rlink('f', 7n) },
    candidates: ['old', 'old/f', 'old/s', 'old/s/g', 'old/l', 'new', 'new/f', 'new/s', 'new/s/g', 'new/l'],
    renames: [{ from: 'old', to: 'new' }],
    expect: ['rename old > new'],
  },
  {
    name: 'a moved directory whose contents differ from what it brings along gets those differences',
    local: { new: ldir(10n), 'new/f': lfile(3, 9n), 'new/added': lfile(1, 1n) },
    remote: { old: rdir(10n), 'old/f': rfile(3, 5n), 'old/dropped': rfile(2, 2n) },
    candidates: ['old', 'old/f', 'old/dropped', 'new', 'new/f', 'new/added', 'new/dropped'],
    renames: [{ from: 'old', to: 'new' }],
    expect: ['rename old > new', 'upload new/f', 'upload new/added', 'delete new/dropped', 'dirattr new 755 @10'],
  },
  {
    name: 'a moved file whose mode changed gets SETATTR; a new file at its old name is uploaded',
    local: { d: ldir(3n), 'd/b': lfile(3, 5n, 0o600), a: lfile(1, 1n) },
    remote: { d: rdir(3n), a: rfile(3, 5n, 0o644) },
    candidates: ['a', 'd', 'd/b'],
    renames: [{ from: 'a', to: 'd/b' }],
    expect: ['rename a > d/b', 'upload a', 'setattr d/b 600 @5', 'dirattr d 755 @3'],
  },
  {
    name: 'a rename replaces what was at its target: the old target is not compared nor deleted',
    local: { b: lfile(3, 5n) },
    remote: { a: rfile(3, 5n), b: rdir(1n), 'b/inner': rfile(1, 1n) },
    candidates: ['a', 'b', 'b/inner'],
    renames: [{ from: 'a', to: 'b' }],
    expect: ['rename a > b'],
  },
]

for (const c of cases) {
  t.test(c.name, async (t) => {
    t.strictSame(run(c).map(show), c.expect)
  })
}

t.test('an upload carries the local entry it was planned from', async (t) => {
  const f = lfile(3, 3n)
  const ops = plan({ candidates: new Set(['f']), local: new Map([['f', f]]), remote: new RemoteTree() })
  t.equal(ops.length, 1)
  t.equal(ops[0]!.kind, 'upload')
  t.equal((ops[0] as Extract<Op, { kind: 'upload' }>).local, f)
})

t.test('a candidate listed twice is planned once', async (t) => {
  const ops = plan({ candidates: new Set(['f', 'f', 'g', 'g']), local: new Map([['f', lfile(1, 1n)]]), remote: remoteTree({ g: rfile(1, 1n) }) })
  t.strictSame(ops.map(show), ['upload f', 'delete g'])
})

t.test('plan() changes neither its inputs nor the remote tree', async (t) => {
  const local = new Map([
    ['d', ldir(1n)],
    ['d/f', lfile(1, 1n)],
  ])
  const remote = remoteTree({ e: rdir(1n), 'e/f': rfile(1, 1n), gone: rfile(1, 1n) })
  const before = [...remote.paths()].map((p) => remote.get(p))
  const renames = [{ from: 'e', to: 'd' }]
  plan({ candidates: new Set(['d', 'd/f', 'e', 'e/f', 'gone']), local, remote, renames })
  t.strictSame([...remote.paths()].map((p) => remote.get(p)), before)
  t.strictSame([...local.keys()], ['d', 'd/f'])
  t.strictSame(renames, [{ from: 'e', to: 'd' }])
})
