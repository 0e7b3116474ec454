// RemoteTree: the client's model of the mirror, kept in step with every change it sends.
import t from 'tap'
import { RemoteTree, isBelowAny, type RemoteEntry } from '../src/client/remote.js'
import { hashKey } from '../src/hash.js'
import type { ListEntry } from '../src/protocol/messages.js'

const ID = Buffer.alloc(16, 1)

function file(path: string, size = 1, mtimeNs = 1n): RemoteEntry {
  return { kind: 'file', path, mode: 0o644, mtimeNs, size, contentKey: hashKey(ID) }
}
function dir(path: string, mtimeNs = 1n): RemoteEntry {
  return { kind: 'dir', path, mode: 0o755, mtimeNs }
}
function link(path: string, target = 't'): RemoteEntry {
  return { kind: 'symlink', path, mode: 0, mtimeNs: 1n, target }
}

/** A tree holding exactly these entries, set in order. */
function treeOf(entries: RemoteEntry[]): RemoteTree {
  const tree = new RemoteTree()
  for (const e of entries) tree.set(e)
  return tree
}

/** The tree's paths, sorted, for order-free comparisons. */
function paths(tree: RemoteTree): string[] {
  return [...tree.paths()].sort()
}

// a/            b/          ab
//   x             c/
//   y/              d
//     z
function sample(): RemoteTree {
  return treeOf([dir('a'), file('a/x'), dir('a/y'), file('a/y/z'), dir('b'), dir('b/c'), file('b/c/d'), file('ab')])
}

t.test('a listing builds the tree; get, has and size see every entry', async (t) => {
  const tree = sample()
  t.equal(tree.size, 8)
  t.strictSame(paths(tree), ['a', 'a/x', 'a/y', 'a/y/z', 'ab', 'b', 'b/c', 'b/c/d'])
  t.strictSame(tree.get('a/y/z'), file('a/y/z'))
  t.ok(tree.has('b/c'))
  t.notOk(tree.has('b/c/e'))
  t.equal(tree.get('nope'), undefined)
  t.equal(new RemoteTree().size, 0)
})

t.test("the server's listing becomes the model: a file's content id is kept as its hash key", async (t) => {
  const listing: ListEntry[] = [
    { kind: 'dir', path: 'd', mode: 0o755, mtimeNs: 1n },
    { kind: 'file', path: 'd/f', mode: 0o644, mtimeNs: 1n, size: 1, contentId: ID },
    { kind: 'symlink', path: 'l', mode: 0, mtimeNs: 1n, target: 't' },
  ]
  const tree = new RemoteTree(listing)
  t.strictSame(paths(tree), ['d', 'd/f', 'l'])
  t.strictSame(tree.get('d'), dir('d'))
  t.strictSame(tree.get('d/f'), file('d/f'))
  t.strictSame(tree.get('l'), link('l'))
  const other = Buffer.alloc(16, 2)
  const f = new RemoteTree([{ kind: 'file', path: 'd/f', mode: 0o644, mtimeNs: 1n, size: 1, contentId: other }]).get('d/f')
  t.equal(f?.kind === 'file' && f.contentKey, hashKey(other))
  t.not(hashKey(other), hashKey(ID))
})

t.test('hasContentAt: a file at that path with exactly that content', async (t) => {
  const tree = sample()
  t.ok(tree.hasContentAt('a/x', hashKey(ID)))
  t.notOk(tree.hasContentAt('a/x', hashKey(Buffer.alloc(16, 2))), 'other content')
  t.notOk(tree.hasContentAt('a', hashKey(ID)), 'a directory')
  t.notOk(tree.hasContentAt('nope', hashKey(ID)), 'nothing there')
  tree.markUnknown('a/x')
  t.notOk(tree.hasContentAt('a/x', hashKey(ID)), 'state unknown')
})

t.test('set replaces an entry in place', async (t) => {
  const tree = sample()
  tree.set(file('a/x', 99, 7n))
  t.equal(tree.size, 8)
  t.strictSame(tree.get('a/x'), file('a/x', 99, 7n))
  t.strictSame([...tree.below('a')].sort(), ['a/x', 'a/y', 'a/y/z'])
})

t.test('set of a directory over a directory keeps its subtree', async (t) => {
  const tree = sample()
  tree.set(dir('a', 5n))
  t.strictSame(tree.get('a'), dir('a', 5n))
  t.strictSame(paths(tree), ['a', 'a/x', 'a/y', 'a/y/z', 'ab', 'b', 'b/c', 'b/c/d'])
})

t.test('set of a non-directory over a directory removes its subtree', async (t) => {
  for (const replacement of [file('a'), link('a'), { kind: 'unknown', path: 'a' } as RemoteEntry]) {
    const tree = sample()
    tree.set(replacement)
    t.strictSame(tree.get('a'), replacement, replacement.kind)
    t.strictSame(paths(tree), ['a', 'ab', 'b', 'b/c', 'b/c/d'], replacement.kind)
    t.strictSame([...tree.below('a')], [], replacement.kind)
    t.equal(tree.size, 5, replacement.kind)
    // the old children do not come back when a directory is set there again
    tree.set(dir('a'))
    t.strictSame([...tree.below('a')], [], replacement.kind)
  }
})

t.test('set of a directory over a file starts with no children', async (t) => {
  const tree = treeOf([file('f')])
  tree.set(dir('f'))
  tree.set(file('f/g'))
  t.strictSame([...tree.below('f')], ['f/g'])
})

t.test('delete removes the entry and its whole subtree, nothing else', async (t) => {
  const tree = sample()
  tree.delete('a')
  t.strictSame(paths(tree), ['ab', 'b', 'b/c', 'b/c/d'])
  t.equal(tree.size, 4)
  t.strictSame([...tree.below('a')], [])
  t.strictSame([...tree.below('')].sort(), ['ab', 'b', 'b/c', 'b/c/d'])

  tree.delete('b/c/d')
  t.strictSame(paths(tree), ['ab', 'b', 'b/c'])
  t.strictSame([...tree.below('b')], ['b/c'])

  tree.delete('not/there') // a no-op
  t.equal(tree.size, 3)

  // a path deleted and set again is a fresh entry without the old subtree
  tree.set(dir('a'))
  t.strictSame([...tree.below('a')], [])
})

t.test('below() yields every path strictly below, each once, parents before children', async (t) => {
  const tree = treeOf([
    dir('r'),
    dir('r/a'),
    dir('r/a/b'),
    file('r/a/b/c'),
    file('r/a/b2'),
    dir('r/z'),
    file('r/z/1'),
    file('r/z/2'),
    link('r/l'),
    file('r2'),
  ])
  const got = [...tree.below('r')]
  t.strictSame([...got].sort(), ['r/a', 'r/a/b', 'r/a/b/c', 'r/a/b2', 'r/l', 'r/z', 'r/z/1', 'r/z/2'])
  t.equal(new Set(got).size, got.length, 'no path twice')
  for (const p of got) {
    const parent = p.slice(0, p.lastIndexOf('/'))
    if (parent !== 'r') t.ok(got.indexOf(parent) < got.indexOf(p), `${parent} before ${p}`)
  }
  t.strictSame([...tree.below('r/a/b/c')], [], 'a file has nothing below')
  t.strictSame([...tree.below('missing')], [])
  t.strictSame([...tree.below('')].sort(), [...tree.paths()].sort(), "'' is the root")
  // an entry whose parent is not in the tree is still found below its parent's path, and goes with it
  tree.set(file('rx/y'))
  t.strictSame([...tree.below('rx')], ['rx/y'])
  tree.delete('rx')
  t.notOk(tree.has('rx/y'))
})

t.test('move re-keys the subtree: new paths, old ones gone, entries otherwise the same', async (t) => {
  const tree = sample()
  tree.move('a', 'n/m')
  t.strictSame(paths(tree), ['ab', 'b', 'b/c', 'b/c/d', 'n/m', 'n/m/x', 'n/m/y', 'n/m/y/z'])
  t.strictSame(tree.get('n/m'), dir('n/m'))
  t.strictSame(tree.get('n/m/y/z'), file('n/m/y/z'))
  t.notOk(tree.has('a'))
  t.notOk(tree.has('a/x'))
  t.strictSame([...tree.below('a')], [])
  t.strictSame([...tree.below('n/m')].sort(), ['n/m/x', 'n/m/y', 'n/m/y/z'])
  t.strictSame([...tree.below('n')].sort(), ['n/m', 'n/m/x', 'n/m/y', 'n/m/y/z'])
  t.equal(tree.size, 8)
})

t.test('move replaces what was at the target, subtree included', async (t) => {
  const tree = sample()
  tree.move('a', 'b')
  t.strictSame(paths(tree), ['ab', 'b', 'b/x', 'b/y', 'b/y/z'])
  t.notOk(tree.has('b/c'))
  t.notOk(tree.has('b/c/d'))
  t.strictSame([...tree.below('b')].sort(), ['b/x', 'b/y', 'b/y/z'])

  const t2 = sample()
  t2.move('a/x', 'b') // a file over a directory
  t.strictSame(paths(t2), ['a', 'a/y', 'a/y/z', 'ab', 'b'])
  t.strictSame(t2.get('b'), file('b'))
  t.strictSame([...t2.below('b')], [])
  t.strictSame([...t2.below('a')].sort(), ['a/y', 'a/y/z'])
})

t.test('move of a file to a new name, and to a prefix-sharing sibling', async (t) => {
  const tree = sample()
  tree.move('ab', 'a/ab')
  t.strictSame(tree.get('a/ab'), file('a/ab'))
  t.notOk(tree.has('ab'))
  t.strictSame([...tree.below('a')].sort(), ['a/ab', 'a/x', 'a/y', 'a/y/z'])
  // moving `a` must not drag `ab`-like siblings along
  const t2 = sample()
  t2.move('a', 'q')
  t.ok(t2.has('ab'))
  t.strictSame(paths(t2), ['ab', 'b', 'b/c', 'b/c/d', 'q', 'q/x', 'q/y', 'q/y/z'])
})

t.test('move up into an ancestor replaces the ancestor', async (t) => {
  const tree = sample()
  tree.move('a/y', 'a')
  t.strictSame(paths(tree), ['a', 'a/z', 'ab', 'b', 'b/c', 'b/c/d'])
  t.strictSame(tree.get('a'), dir('a'))
})

t.test('markUnknown makes an entry match nothing; for a directory, its subtree is dropped', async (t) => {
  const tree = sample()
  tree.markUnknown('a/x')
  t.strictSame(tree.get('a/x'), { kind: 'unknown', path: 'a/x' })
  tree.markUnknown('b')
  t.strictSame(tree.get('b'), { kind: 'unknown', path: 'b' })
  t.strictSame([...tree.below('b')], [])
  t.notOk(tree.has('b/c/d'))
  tree.markUnknown('new/path')
  t.strictSame(tree.get('new/path'), { kind: 'unknown', path: 'new/path' })
  t.strictSame([...tree.below('new')], ['new/path'])
  // an unknown entry can be moved and deleted like any other
  tree.move('a/x', 'a/w')
  t.strictSame(tree.get('a/w'), { kind: 'unknown', path: 'a/w' })
  tree.delete('a/w')
  t.notOk(tree.has('a/w'))
})

t.test('isBelowAny compares whole segments and excludes the roots themselves', async (t) => {
  t.ok(isBelowAny('a/b', ['a']))
  t.ok(isBelowAny('a/b/c', ['x', 'a/b']))
  t.notOk(isBelowAny('a', ['a']))
  t.notOk(isBelowAny('ab/c', ['a']))
  t.notOk(isBelowAny('a', []))
})
