// End to end, with real sfmd and sfmc processes on 127.0.0.1: after each case the mirror equals the
// folder (paths, types, bytes, permission bits, mtimes to the ns, symlink targets).
import { execFileSync } from 'node:child_process'
import { chmodSync, mkdirSync, renameSync, rmSync, symlinkSync, utimesSync, writeFileSync, appendFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { freePort, mirrorDifference, sleep, startClient, startServer, syncOnce, waitForMirror, waitUntil } from '../helpers/procs.js'
import { testdir } from '../helpers/testdir.js'

function populate(src: string): void {
  mkdirSync(join(src, 'sub/deep/er'), { recursive: true })
  mkdirSync(join(src, 'empty-dir'))
  writeFileSync(join(src, 'hello.txt'), 'hello, sfm\n')
  writeFileSync(join(src, 'empty'), '')
  writeFileSync(join(src, 'sub/binary.bin'), Buffer.from(Array.from({ length: 70_000 }, (_, i) => (i * 7919) & 0xff)))
  writeFileSync(join(src, 'sub/deep/er/run.sh'), '#!/bin/sh\necho hi\n')
  chmodSync(join(src, 'sub/deep/er/run.sh'), 0o755)
  writeFileSync(join(src, 'private'), 'secret')
  chmodSync(join(src, 'private'), 0o600)
  symlinkSync('hello.txt', join(src, 'link'))
  symlinkSync('/nonexistent/target', join(src, 'dangling'))
  symlinkSync('../..', join(src, 'sub/up'))
  // names kept byte for byte
  writeFileSync(join(src, 'name with spaces'), '1')
  writeFileSync(join(src, '-leading-dash'), '2')
  writeFileSync(join(src, 'back\\slash'), '3')
  writeFileSync(join(src, 'caf\u00e9-nfc'), 'nfc')
  writeFileSync(join(src, 'cafe\u0301-nfd'), 'nfd')
  writeFileSync(join(src, 'x'.repeat(255)), '255')
  writeFileSync(join(src, '\u00e9'.repeat(127) + 'x'), '255 bytes of UTF-8')
  utimesSync(join(src, 'hello.txt'), new Date('2001-02-03T04:05:06Z'), new Date('2001-02-03T04:05:06Z'))
}

/** A test's folder with `src` in it, populated, and where the mirror goes beside it. */
function populatedSource(t: Parameters<typeof testdir>[0]): { src: string; mirror: string } {
  const dir = testdir(t)
  const src = join(dir, 'src')
  mkdirSync(src)
  populate(src)
  return { src, mirror: join(dir, 'mirror') }
}

t.test('a first sync copies every kind of entry exactly', async (t) => {
  const { src, mirror } = populatedSource(t)
  const server = await startServer(t, mirror)
  const r = await syncOnce(t, src, server.port)
  t.equal(r.code, 0, r.output)
  t.equal(mirrorDifference(src, mirror), null)
  t.match(r.stdout, /synced \d+ file/)
})

t.test('a second sync of an unchanged tree sends no file data', async (t) => {
  const { src, mirror } = populatedSource(t)
  const server = await startServer(t, mirror)
  t.equal((await syncOnce(t, src, server.port)).code, 0)
  const again = await syncOnce(t, src, server.port, ['--json'])
  t.equal(again.code, 0, again.output)
  const summary = JSON.parse(again.stdout.trim().split('\n').pop()!).summary
  t.equal(summary.files, 0, 'no file uploaded')
  t.equal(summary.dataBytesSent, 0, 'no data sent')
  t.equal(mirrorDifference(src, mirror), null)
  // the mirror digest matched, so no listing (about 60 bytes an entry) came: MAGIC, WELCOME, DIGEST_REPLY
  t.match(again.output, /the mirror matches the folder \(\d+ entries\): nothing to send/)
  t.ok(summary.wireBytesReceived < 100, `${summary.wireBytesReceived} bytes received`)
})

t.test('a one-shot sync asks for the mirror digest first, and still finds every kind of change', async (t) => {
  const { src, mirror } = populatedSource(t)
  const server = await startServer(t, mirror)
  t.equal((await syncOnce(t, src, server.port)).code, 0)
  const at = (s: number) => new Date(Date.UTC(2020, 0, 1) + s * 1000)
  const changes: Array<[string, () => void]> = [
    ['a file\'s mtime only', () => utimesSync(join(src, 'hello.txt'), at(1), at(1))],
    ['a file\'s mode only', () => chmodSync(join(src, 'private'), 0o640)],
    ['a directory\'s mtime only', () => utimesSync(join(src, 'sub'), at(2), at(2))],
    ['a new empty file', () => writeFileSync(join(src, 'sub/new-empty'), '')],
    ['a deleted file', () => rmSync(join(src, 'name with spaces'))],
    ['a symlink pointing elsewhere', () => {
      rmSync(join(src, 'link'))
      symlinkSync('private', join(src, 'link'))
    }],
    ['a file that became a directory', () => {
      rmSync(join(src, 'empty'))
      mkdirSync(join(src, 'empty'))
    }],
    ['a file edited to the same size, with a new mtime', () => {
      writeFileSync(join(src, 'hello.txt'), 'HELLO, SFM\n')
      utimesSync(join(src, 'hello.txt'), at(3), at(3))
    }],
  ]
  for (const [what, change] of changes) {
    change()
    const r = await syncOnce(t, src, server.port, ['--json'])
    t.equal(r.code, 0, `${what}: ${r.output}`)
    t.notMatch(r.output, /the mirror matches the folder/, `${what}: the digests differ`)
    t.equal(mirrorDifference(src, mirror), null, `${what}: the mirror has it`)
  }
  const last = await syncOnce(t, src, server.port)
  t.match(last.output, /the mirror matches the folder/, 'unchanged since: the digests match again')
})

t.test('a one-shot sync that waited for its server sends what changed while it waited', async (t) => {
  const { src, mirror } = populatedSource(t)
  const port = await freePort()
  const client = startClient(t, src, port, ['--once'])
  // past the 2 s for which the scan made before connecting would be taken as it is
  await sleep(2_500)
  writeFileSync(join(src, 'written-while-waiting.txt'), 'late\n')
  rmSync(join(src, 'private'))
  await startServer(t, mirror, ['--port', String(port)])
  const code = await Promise.race([client.exited, sleep(60_000).then(() => 'timeout')])
  t.equal(code, 0, client.output())
  t.equal(mirrorDifference(src, mirror), null, 'the mirror has the folder as it was once connected')
})

t.test('watch mode mirrors creates, edits, deletes, renames and attribute changes as they happen', async (t) => {
  const { src, mirror } = populatedSource(t)
  const server = await startServer(t, mirror)
  const client = startClient(t, src, server.port, ['--verbose'])
  await waitForMirror(src, mirror)

  writeFileSync(join(src, 'new.txt'), 'new file')
  await waitForMirror(src, mirror)
  appendFileSync(join(src, 'hello.txt'), 'more\n')
  await waitForMirror(src, mirror)
  mkdirSync(join(src, 'made/inside/dirs'), { recursive: true })
  writeFileSync(join(src, 'made/inside/dirs/f'), 'created with its parents')
  await waitForMirror(src, mirror)
  renameSync(join(src, 'new.txt'), join(src, 'sub/moved.txt'))
  await waitForMirror(src, mirror)
  chmodSync(join(src, 'sub/moved.txt'), 0o751)
  utimesSync(join(src, 'empty'), new Date(1_000_000), new Date(2_000_000))
  await waitForMirror(src, mirror)
  rmSync(join(src, 'sub'), { recursive: true })
  rmSync(join(src, 'link'))
  await waitForMirror(src, mirror)
  // a file becomes a directory, and a directory a file
  rmSync(join(src, 'hello.txt'))
  mkdirSync(join(src, 'hello.txt'))
  rmSync(join(src, 'empty-dir'), { recursive: true })
  writeFileSync(join(src, 'empty-dir'), 'now a file')
  await waitForMirror(src, mirror)
  t.notMatch(client.output(), /internal error/)
})

t.test('a renamed tree of 300 files costs one rename and no data', async (t) => {
  const dir = testdir(t)
  const src = join(dir, 'src')
  const mirror = join(dir, 'mirror')
  mkdirSync(join(src, 'tree/a/b'), { recursive: true })
  for (let i = 0; i < 300; i++) writeFileSync(join(src, `tree/${i % 3 === 0 ? 'a/' : i % 3 === 1 ? 'a/b/' : ''}f${i}`), `file ${i}\n`.repeat(50))
  const server = await startServer(t, mirror)
  const client = startClient(t, src, server.port, ['--verbose'])
  await waitForMirror(src, mirror)
  // the files are on the mirror before the client has logged their replies: wait for all 300 lines
  await waitUntil(() => (client.output().match(/ upload tree\//g) ?? []).length === 300, 10_000, () => 'the initial uploads were not all logged')
  const before = client.output().length
  renameSync(join(src, 'tree'), join(src, 'renamed'))
  await waitForMirror(src, mirror)
  // the mirror can be complete before the client's log line has come through the pipe
  await client.waitForOutput(/rename renamed/)
  const after = client.output().slice(before)
  t.match(after, /rename renamed/, 'the server was told to rename')
  t.notMatch(after, /upload /, 'nothing was uploaded')
})

t.test('a restarted client uploads what changed while it was down', async (t) => {
  const { src, mirror } = populatedSource(t)
  const server = await startServer(t, mirror)
  const first = startClient(t, src, server.port)
  await waitForMirror(src, mirror)
  first.kill('SIGTERM')
  t.equal(await first.exited, 0, 'stops cleanly on SIGTERM')
  writeFileSync(join(src, 'while-down'), 'written while the client was down')
  rmSync(join(src, 'sub/deep'), { recursive: true })
  renameSync(join(src, 'private'), join(src, 'private-renamed'))
  appendFileSync(join(src, 'hello.txt'), 'and an edit')
  const second = startClient(t, src, server.port)
  await waitForMirror(src, mirror)
  t.notMatch(second.output(), /another client/)
})

t.test('sockets and FIFOs are skipped with one warning each', async (t) => {
  const dir = testdir(t)
  const src = join(dir, 'src')
  mkdirSync(src)
  writeFileSync(join(src, 'regular'), 'x')
  execFileSync('mkfifo', [join(src, 'fifo')])
  const server = await startServer(t, join(dir, 'mirror'))
  const r = await syncOnce(t, src, server.port)
  t.equal(r.code, 0, r.output)
  t.equal(r.output.match(/fifo/g)?.length, 1, 'one warning')
  rmSync(join(src, 'fifo'))
  t.equal(mirrorDifference(src, join(dir, 'mirror')), null)
})
