// Ignore rules end to end: .sfmignore (gitignore syntax) and --ignore. Ignored paths are neither
// uploaded nor deleted on the mirror, and edits to .sfmignore take effect without a restart.
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { startClient, startServer, syncOnce, waitUntil } from '../helpers/procs.js'
import { testdir } from '../helpers/testdir.js'

/** Every file below `dir` (wire paths), except the server's own state. */
function files(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name).slice(dir.length + 1))
    .filter((p) => !p.startsWith('.sfm/'))
    .sort()
}

t.test('.sfmignore and --ignore keep paths off the mirror; negations bring some back', async (t) => {
  const dir = testdir(t, {
    src: {
      '.sfmignore': '*.log\nbuild/\n!keep.log\n# a comment\n',
      'a.txt': 'a',
      'debug.log': 'ignored',
      'keep.log': 'kept by the negation',
      build: { 'out.bin': 'ignored with its directory', deep: { 'x.o': 'ignored' } },
      sub: { 'b.txt': 'b', 'trace.log': 'ignored below too', 'tmp-1': 'ignored by --ignore' },
    },
  })
  const server = await startServer(t, join(dir, 'mirror'))
  const r = await syncOnce(t, join(dir, 'src'), server.port, ['--ignore', 'tmp-*'])
  t.equal(r.code, 0, r.output)
  t.same(files(join(dir, 'mirror')), ['.sfmignore', 'a.txt', 'keep.log', 'sub/b.txt'])
})

t.test('ignored entries already on the mirror are never deleted, even with their directory', async (t) => {
  const dir = testdir(t, {
    src: { 'a.txt': 'a', build: { 'out.bin': 'built', 'readme.txt': 'not ignored' }, 'old.log': 'log' },
  })
  const src = join(dir, 'src')
  const mirror = join(dir, 'mirror')
  const server = await startServer(t, mirror)
  t.equal((await syncOnce(t, src, server.port)).code, 0, 'first without rules: everything is mirrored')
  writeFileSync(join(src, '.sfmignore'), '*.log\n*.bin\n')
  rmSync(join(src, 'old.log'))
  rmSync(join(src, 'build'), { recursive: true })
  const r = await syncOnce(t, src, server.port)
  t.equal(r.code, 0, r.output)
  t.same(files(mirror), ['.sfmignore', 'a.txt', 'build/out.bin', 'old.log'], 'the ignored files stay; the rest of build/ went')
})

t.test('in watch mode ignored files are not uploaded, and an edit to .sfmignore applies at once', async (t) => {
  const dir = testdir(t, { src: { '.sfmignore': '*.log\n', 'a.txt': 'a' } })
  const src = join(dir, 'src')
  const mirror = join(dir, 'mirror')
  const server = await startServer(t, mirror)
  const client = startClient(t, src, server.port)
  await waitUntil(() => existsSync(join(mirror, 'a.txt')), 10_000, () => client.output())
  mkdirSync(join(src, 'logs'))
  writeFileSync(join(src, 'logs/run.log'), 'ignored')
  writeFileSync(join(src, 'b.txt'), 'not ignored')
  await waitUntil(() => existsSync(join(mirror, 'b.txt')), 10_000, () => client.output())
  t.notOk(existsSync(join(mirror, 'logs/run.log')), 'the ignored file was not uploaded')
  writeFileSync(join(src, '.sfmignore'), '# nothing ignored any more\n')
  await waitUntil(() => existsSync(join(mirror, 'logs/run.log')), 10_000, () => client.output())
  t.pass('once the rule is gone, the file arrives without a restart')
})
