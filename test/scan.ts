import t from 'tap'
import { execFileSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import { join } from 'node:path'
import { type LocalEntry, rootIdentity, sameRoot, scanTree, statEntry } from '../src/client/scan.js'
import { listDirFunction } from '../src/fs/list-dir.js'
import { testdir } from './helpers/testdir.js'

const portable = process.env.SFM_NO_FOLDER_ADDON === '1'
t.equal(listDirFunction() !== null, !portable, portable ? 'scans with readdir and lstat' : 'scans with the addon (built by npm install)')

// Runs scanTree and collects its warnings.
async function scan(root: string, opts: Omit<Parameters<typeof scanTree>[1], 'onWarning'> = {}) {
  const warnings: string[] = []
  const entries = await scanTree(root, { ...opts, onWarning: msg => warnings.push(msg) })
  return { entries, warnings }
}

function sortedKeys(map: Map<string, LocalEntry>): string[] {
  return [...map.keys()].sort()
}

// Sets a file's mtime to the nanosecond, which fs.utimes (seconds as a double) cannot.
function touchNs(path: string, seconds: number, nanos: number) {
  execFileSync('touch', ['-h', '-m', '-d', `@${seconds}.${String(nanos).padStart(9, '0')}`, path])
}

t.test('reports files, directories and symlinks with their fields', async t => {
  const root = testdir(t, { dir: { 'file.txt': 'hello, sfm\n' } })
  fs.symlinkSync('dir/file.txt', join(root, 'link'))
  fs.chmodSync(join(root, 'dir/file.txt'), 0o4751)
  fs.chmodSync(join(root, 'dir'), 0o750)
  touchNs(join(root, 'dir/file.txt'), 981173106, 123456789)
  touchNs(join(root, 'link'), 1, 999999999)

  const { entries, warnings } = await scan(root)
  t.same(warnings, [])
  t.same(sortedKeys(entries), ['dir', 'dir/file.txt', 'link'])

  const file = entries.get('dir/file.txt')!
  const fileStat = fs.lstatSync(join(root, 'dir/file.txt'), { bigint: true })
  t.equal(file.kind, 'file')
  t.equal(file.mode, 0o4751, 'set-user-id is kept: st_mode & 0o7777')
  t.equal(file.mtimeNs, 981173106123456789n, 'mtime to the nanosecond')
  t.equal(file.size, 11)
  t.equal(file.ino, fileStat.ino)
  t.equal(file.ctimeNs, fileStat.ctimeNs)
  t.notOk('target' in file, 'a file has no target')

  const dir = entries.get('dir')!
  t.equal(dir.kind, 'dir')
  t.equal(dir.mode, 0o750)
  t.notOk(dir.unreadable)

  const link = entries.get('link')!
  t.equal(link.kind, 'symlink')
  t.equal(link.target, 'dir/file.txt')
  t.equal(link.size, 'dir/file.txt'.length, 'a symlink size is its target length')
  t.equal(link.mtimeNs, 1_999_999_999n, 'the link own mtime, not its target')
})

t.test('skips an entry whose time does not fit int64 nanoseconds, with one warning', async t => {
  const root = testdir(t, { 'far.txt': 'from 2300\n', 'near.txt': 'now\n', 'nanos.txt': 'exact\n' })
  // 2300-01-01: past 2262, where int64 nanoseconds end (PROTOCOL.md 3.4's mtime_ns)
  execFileSync('touch', ['-h', '-m', '-d', '@10413792000', join(root, 'far.txt')])
  // the last second that fits, to the nanosecond: kept exactly
  touchNs(join(root, 'nanos.txt'), 9_223_372_035, 999_999_999)
  const { entries, warnings } = await scan(root)
  t.same(sortedKeys(entries), ['nanos.txt', 'near.txt'])
  t.equal(entries.get('nanos.txt')?.mtimeNs, 9_223_372_035_999_999_999n, 'a time near the end of the range is exact')
  t.same(warnings, ['skipping "far.txt": lstat failed (EOVERFLOW)'])
  const one: string[] = []
  t.equal(await statEntry(root, 'far.txt', { onWarning: msg => one.push(msg) }), null, 'statEntry skips it too')
  t.same(one, ['skipping "far.txt": lstat failed (EOVERFLOW)'])
})

t.test('does not follow a symlink to a directory', async t => {
  const root = testdir(t, { real: { inside: 'x' } })
  fs.symlinkSync('real', join(root, 'link'))
  fs.symlinkSync('/', join(root, 'slash'))
  const { entries } = await scan(root)
  t.same(sortedKeys(entries), ['link', 'real', 'real/inside', 'slash'])
  t.equal(entries.get('slash')!.target, '/')
})

t.test('keeps a dangling symlink and an absolute one as data', async t => {
  const root = testdir(t, {})
  fs.symlinkSync('../../nowhere', join(root, 'dangling'))
  const { entries } = await scan(root)
  t.equal(entries.get('dangling')!.target, '../../nowhere')
})

t.test('skips a FIFO with one warning', async t => {
  const root = testdir(t, { a: { keep: 'x' } })
  execFileSync('mkfifo', [join(root, 'a/pipe')])
  const { entries, warnings } = await scan(root)
  t.same(sortedKeys(entries), ['a', 'a/keep'])
  t.equal(warnings.length, 1)
  t.match(warnings[0], /"a\/pipe".*FIFO/)
})

t.test('skips a socket with one warning', async t => {
  const net = await import('node:net')
  const root = testdir(t, {})
  const server = net.createServer()
  await new Promise<void>(resolve => server.listen(join(root, 'sock'), resolve))
  t.teardown(() => new Promise<void>(resolve => server.close(() => resolve())))
  const { entries, warnings } = await scan(root)
  t.equal(entries.size, 0)
  t.equal(warnings.length, 1)
  t.match(warnings[0], /socket/)
})

t.test('skips a top-level .sfm with one warning but keeps a/.sfm and .sfmx', async t => {
  const root = testdir(t, {
    '.sfm': { tmp: { x: 'x' }, trash: {} },
    '.sfmx': 'x',
    a: { '.sfm': { y: 'y' } },
  })
  const { entries, warnings } = await scan(root)
  t.same(sortedKeys(entries), ['.sfmx', 'a', 'a/.sfm', 'a/.sfm/y'])
  t.equal(warnings.length, 1)
  t.match(warnings[0], /"\.sfm".*reserved/)
  const quiet = await scan(root, { isIgnored: path => path === '.sfm' })
  t.same(sortedKeys(quiet.entries), ['.sfmx', 'a', 'a/.sfm', 'a/.sfm/y'])
  t.same(quiet.warnings, [], 'a caller that expects .sfm ignores it without a warning')
})

t.test('under limits the scan to one subtree', async t => {
  const root = testdir(t, {
    a: { b: { c: 'c', d: { e: 'e' } }, sibling: 's' },
    ab: 'not below a',
    top: 't',
  })
  fs.symlinkSync('a', join(root, 'alias'))

  t.same(sortedKeys((await scan(root, { under: 'a/b' })).entries), ['a/b', 'a/b/c', 'a/b/d', 'a/b/d/e'])
  t.same(sortedKeys((await scan(root, { under: 'a' })).entries), ['a', 'a/b', 'a/b/c', 'a/b/d', 'a/b/d/e', 'a/sibling'])
  t.same(sortedKeys((await scan(root, { under: 'top' })).entries), ['top'], 'a file is its own subtree')
  t.same(sortedKeys((await scan(root, { under: 'missing/x' })).entries), [], 'an absent path gives an empty map')
  t.same(sortedKeys((await scan(root, { under: 'alias/b' })).entries), [], 'no path below a symlink')
  t.same(sortedKeys((await scan(root, { under: 'top/x' })).entries), [], 'no path below a file')
  t.same(sortedKeys((await scan(root, { under: 'alias' })).entries), ['alias'], 'the symlink itself')
  await t.rejects(scan(root, { under: '../etc' }), { code: 'SFM_ERR_BAD_PATH' }, 'under must be a wire path')
  await t.rejects(scan(root, { under: '.sfm' }), { code: 'SFM_ERR_BAD_PATH' })
})

t.test('isIgnored prunes entries and whole directories', async t => {
  const root = testdir(t, { node_modules: { x: { y: 'y' } }, src: { 'a.c': 'a', 'a.o': 'o' } })
  const seen: [string, boolean][] = []
  const isIgnored = (path: string, isDir: boolean) => {
    seen.push([path, isDir])
    return (isDir && path === 'node_modules') || path.endsWith('.o')
  }
  const { entries, warnings } = await scan(root, { isIgnored })
  t.same(sortedKeys(entries), ['src', 'src/a.c'])
  t.same(warnings, [])
  t.notOk(seen.some(([p]) => p.startsWith('node_modules/')), 'an ignored directory is not entered')
  t.ok(seen.some(([p, isDir]) => p === 'src' && isDir), 'isDir is passed')

  t.same(sortedKeys((await scan(root, { under: 'node_modules/x', isIgnored })).entries), [], 'under inside an ignored dir')
})

t.test('keeps names with a backslash, a leading dash, NFC and NFD exactly', async t => {
  const names = ['back\\slash', '-rf', '--', 'caf\u00e9', 'cafe\u0301', ' space ', 'tab\there', 'new\nline', '\ufffd-real']
  const root = testdir(t, Object.fromEntries(names.map(name => [name, name])))
  const { entries, warnings } = await scan(root)
  t.same(warnings, [])
  t.same(sortedKeys(entries), [...names].sort())
  t.equal(entries.get('caf\u00e9')!.size, Buffer.byteLength('caf\u00e9'))
  t.equal(entries.get('cafe\u0301')!.size, Buffer.byteLength('cafe\u0301'), 'NFC and NFD are two entries')
})

t.test('skips a name that is not UTF-8, with one warning', async t => {
  const root = testdir(t, { sub: { ok: 'x', '\ufffd': 'a real U+FFFD' } })
  fs.writeFileSync(Buffer.concat([Buffer.from(`${root}/sub/`), Buffer.from([0xff, 0x61])]), 'x')
  fs.mkdirSync(Buffer.concat([Buffer.from(`${root}/`), Buffer.from([0x62, 0xc3, 0x28])]))
  fs.writeFileSync(Buffer.concat([Buffer.from(`${root}/`), Buffer.from([0x62, 0xc3, 0x28, 0x2f, 0x63])]), 'inside')
  const { entries, warnings } = await scan(root)
  t.same(sortedKeys(entries), ['sub', 'sub/ok', 'sub/\ufffd'])
  t.equal(warnings.length, 2, 'one for the file, one for the directory, none for its contents')
  t.ok(warnings.some(w => /"sub\/\ufffda".*not valid UTF-8.*ff 61/.test(w)))
  t.ok(warnings.some(w => /not valid UTF-8.*62 c3 28/.test(w)))
})

t.test('skips a symlink whose target is not UTF-8, with one warning', async t => {
  const root = testdir(t, {})
  fs.symlinkSync(Buffer.from([0x66, 0xfe]), join(root, 'bad'))
  fs.symlinkSync('\ufffd', join(root, 'good'))
  const { entries, warnings } = await scan(root)
  t.same(sortedKeys(entries), ['good'])
  t.equal(warnings.length, 1)
  t.match(warnings[0], /"bad".*target is not valid UTF-8/)
})

t.test('skips a path longer than 4095 bytes, with one warning', async t => {
  // 17 levels of 250-byte names: level 16 ends at 4015 bytes, level 17 at 4266. Below a short root (tap's
  // fixture folder has a long name) level 16 stays within PATH_MAX. No call can name the deepest levels
  // at once, so a child node walks down with relative chdir, and rm -rf (which uses openat) cleans up.
  const root = fs.mkdtempSync(join(os.tmpdir(), 'sfm-'))
  t.teardown(() => execFileSync('rm', ['-rf', root]))
  const name = 'd'.repeat(250)
  const make = `process.chdir(process.argv[1]); for (let i = 0; i < 17; i++) { fs.mkdirSync(process.argv[2]); process.chdir(process.argv[2]) }; fs.writeFileSync('f', 'x')`
  execFileSync(process.execPath, ['-e', make, root, name])
  const { entries, warnings } = await scan(root)
  t.equal(entries.size, 16)
  t.equal(warnings.length, 1)
  t.match(warnings[0], /longer than 4095 bytes/)
})

t.test('warns about a path the system cannot reach from a deep root', async t => {
  // Below a root of more than 80 bytes, level 16 (4015 bytes) is a valid wire path but root + path passes
  // PATH_MAX: lstat fails with ENAMETOOLONG, which is a warning, not an absent entry.
  const root = fs.mkdtempSync(join(os.tmpdir(), `sfm-${'r'.repeat(100)}-`))
  t.teardown(() => execFileSync('rm', ['-rf', root]))
  const name = 'd'.repeat(250)
  const make = `process.chdir(process.argv[1]); for (let i = 0; i < 16; i++) { fs.mkdirSync(process.argv[2]); process.chdir(process.argv[2]) }`
  execFileSync(process.execPath, ['-e', make, root, name])
  const { entries, warnings } = await scan(root)
  t.equal(entries.size, 15)
  t.equal(warnings.length, 1)
  t.match(warnings[0], /lstat failed \(ENAMETOOLONG\)/)
  const deepest = Array.from({ length: 16 }, () => name).join('/')
  const statWarnings: string[] = []
  t.equal(await statEntry(root, deepest, { onWarning: w => statWarnings.push(w) }), null)
  t.match(statWarnings, [/ENAMETOOLONG/])
})

t.test('an unreadable directory is marked, with one warning', async t => {
  const root = testdir(t, { locked: { x: 'x' } })
  const locked = join(root, 'locked')
  fs.chmodSync(locked, 0)
  const { entries, warnings } = await scan(root)
  fs.chmodSync(locked, 0o755)
  /* c8 ignore start: root reads every directory; the case only runs as another user */
  if (process.getuid?.() === 0) {
    t.equal(entries.get('locked')!.unreadable, undefined, 'as root every directory reads')
    return
  }
  /* c8 ignore stop */
  t.equal(entries.get('locked')!.unreadable, true)
  t.equal(warnings.length, 1)
})

t.test('a warning callback that throws fails the scan', async t => {
  const root = testdir(t, { a: {} })
  execFileSync('mkfifo', [join(root, 'a/pipe')])
  await t.rejects(
    scanTree(root, {
      onWarning: () => {
        throw new Error('boom')
      },
    }),
    { message: 'boom' },
  )
})

t.test('a root that is missing or not a directory is SFM_ROOT_GONE', async t => {
  const root = testdir(t, { file: 'x' })
  await t.rejects(scan(join(root, 'missing')), { code: 'SFM_ROOT_GONE', message: /does not exist/ })
  await t.rejects(scan(join(root, 'file')), { code: 'SFM_ROOT_GONE', message: /not a directory/ })
  await t.rejects(rootIdentity(join(root, 'missing')), { code: 'SFM_ROOT_GONE' })
  await t.rejects(statEntry(join(root, 'missing'), 'x'), { code: 'SFM_ROOT_GONE' })
})

t.test('a root given as a symlink is followed', async t => {
  const base = testdir(t, { real: { x: 'x' } })
  fs.symlinkSync('real', join(base, 'root'))
  const { entries } = await scan(join(base, 'root'))
  t.same(sortedKeys(entries), ['x'])
  const id = await rootIdentity(join(base, 'root'))
  const st = fs.statSync(join(base, 'real'), { bigint: true })
  t.same(id, { dev: st.dev, ino: st.ino, birthtimeNs: st.birthtimeNs })
})

t.test('sameRoot tells a replaced root apart even when its inode number is reused', async t => {
  const base = testdir(t, { root: {} })
  const root = join(base, 'root')
  const before = await rootIdentity(root)
  t.ok(sameRoot(before, await rootIdentity(root)))
  fs.rmdirSync(root)
  fs.mkdirSync(root)
  const after = await rootIdentity(root)
  t.comment(`inode number ${after.ino === before.ino ? 'reused' : 'not reused'} by the new directory`)
  t.notOk(sameRoot(before, after))
})

t.test('an entry that vanishes during the scan is absent without a warning', async t => {
  const root = testdir(t, Object.fromEntries(Array.from({ length: 500 }, (_, i) => [`f${i}`, 'x'])))
  // Remove files while the scan runs; each one is either seen whole or not at all.
  const scanning = scan(root, { concurrency: 2 })
  for (let i = 0; i < 500; i += 2) fs.rmSync(join(root, `f${i}`), { force: true })
  const { entries, warnings } = await scanning
  t.same(warnings, [])
  for (const [path, entry] of entries) t.equal(entry.kind, 'file', path)
  t.ok(entries.size >= 250)
})

t.test('statEntry reads one path', async t => {
  const root = testdir(t, { a: { b: 'bb' }, f: 'x' })
  fs.symlinkSync('a', join(root, 'alias'))
  execFileSync('mkfifo', [join(root, 'a/pipe')])
  t.match(await statEntry(root, 'a/b'), { kind: 'file', size: 2 })
  t.match(await statEntry(root, 'a'), { kind: 'dir' })
  t.match(await statEntry(root, 'alias'), { kind: 'symlink', target: 'a' })
  t.equal(await statEntry(root, 'alias/b'), null, 'not through a symlink')
  t.equal(await statEntry(root, 'f/x'), null, 'not below a file')
  t.equal(await statEntry(root, 'missing'), null)
  t.equal(await statEntry(root, 'missing/deeper'), null)
  const warnings: string[] = []
  t.equal(await statEntry(root, 'a/pipe', { onWarning: w => warnings.push(w) }), null)
  t.equal(await statEntry(root, 'a/pipe'), null, 'the warning is optional')
  t.match(warnings, [/FIFO/])
  await t.rejects(statEntry(root, 'a//b'), { code: 'SFM_ERR_BAD_PATH' })
})

t.test('statEntry and scanTree agree', async t => {
  const root = testdir(t, { a: { b: { c: 'c' } }, d: 'd' })
  fs.symlinkSync('d', join(root, 'e'))
  const { entries } = await scan(root)
  for (const [path, entry] of entries) t.same(await statEntry(root, path), entry, path)
})

t.test('scans 20,000 files in reasonable time', async t => {
  const root = testdir(t, {})
  // 200 directories of 100 files, written directly: t.testdir would spend longer than the scan.
  for (let d = 0; d < 200; d++) {
    const dir = join(root, `dir${d}`)
    fs.mkdirSync(dir)
    for (let f = 0; f < 100; f++) fs.writeFileSync(join(dir, `file${f}.txt`), '')
  }
  const cold = process.hrtime.bigint()
  const { entries, warnings } = await scan(root)
  const coldMs = Number(process.hrtime.bigint() - cold) / 1e6
  t.equal(entries.size, 20_200)
  t.same(warnings, [])
  const warm = process.hrtime.bigint()
  await scan(root)
  const warmMs = Number(process.hrtime.bigint() - warm) / 1e6
  t.comment(`scanned 20,200 entries in ${coldMs.toFixed(0)} ms, again in ${warmMs.toFixed(0)} ms`)
  t.ok(coldMs < 10_000, 'under 10 s even on a slow CI machine')
})
