import { existsSync, mkdirSync, readdirSync, renameSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { removeTree } from '../src/fs/remove-tree.js'
import { testdir } from './helpers/testdir.js'

/** Makes `top/n…/n…/…` deeper than PATH_MAX by building it short and moving it under a long prefix. */
function deepTree(base: string): { top: string; depth: number } {
  const short = join(base, 's')
  const name = 'n'.repeat(250)
  let dir = short
  let depth = 0
  mkdirSync(short)
  while (Buffer.byteLength(dir) < 3_800) {
    dir = join(dir, name)
    mkdirSync(dir)
    writeFileSync(join(dir, 'f'), 'x')
    depth++
  }
  // a long prefix moves the tree past PATH_MAX without touching any long path
  const long = join(base, 'p'.repeat(250))
  mkdirSync(long)
  renameSync(short, join(long, 's'))
  return { top: long, depth }
}

t.test('removes a tree whose paths are longer than PATH_MAX', async (t) => {
  const base = testdir(t, { spare: {} })
  const { top, depth } = deepTree(base)
  t.ok(depth >= 14, `${depth} levels of 250-byte names`)
  await removeTree(top, join(base, 'spare'))
  t.notOk(existsSync(top), 'the tree is gone')
  t.same(readdirSync(join(base, 'spare')), [], 'nothing is left in the spare directory')
})

t.test('a symlink is removed, never followed', async (t) => {
  const base = testdir(t, { outside: { 'keep.txt': 'precious' }, trash: {}, spare: {} })
  symlinkSync(join(base, 'outside'), join(base, 'trash', 'link'))
  mkdirSync(join(base, 'trash', 'dir'))
  symlinkSync(join(base, 'outside'), join(base, 'trash', 'dir', 'inner-link'))
  await removeTree(join(base, 'trash', 'link'), join(base, 'spare'))
  await removeTree(join(base, 'trash', 'dir'), join(base, 'spare'))
  t.same(readdirSync(join(base, 'trash')), [])
  t.same(readdirSync(join(base, 'outside')), ['keep.txt'], 'what the links pointed to is untouched')
})

t.test('a missing path is not an error; a file is removed', async (t) => {
  const base = testdir(t, { f: 'x' })
  await removeTree(join(base, 'missing'), base)
  await removeTree(join(base, 'f'), base)
  t.same(readdirSync(base), [])
})
