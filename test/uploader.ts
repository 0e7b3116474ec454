// Reading a pass's small files ahead, many in one job (readSmallFilesDigest in src/client/uploader.ts):
// what it reads must be what readFileDigest reads, and whatever it cannot vouch for is left to it.
import t from 'tap'
import { appendFileSync, utimesSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { nativeAvailable } from '../src/fs/native.js'
import { readFileDigest, readSmallFilesDigest, type PreparedFile } from '../src/client/uploader.js'
import { testdir } from './helpers/testdir.js'

const OLD = new Date('2020-01-02T03:04:05Z')

t.test('files read together are read as readFileDigest reads them one by one', { skip: nativeAvailable ? false : 'addon not built' }, async (t) => {
  const dir = testdir(t, { a: 'alpha', empty: '', b: Buffer.alloc(40_000, 5) })
  for (const n of ['a', 'empty', 'b']) utimesSync(join(dir, n), OLD, OLD)
  const paths = ['a', 'empty', 'b'].map((n) => join(dir, n))
  const together = await readSmallFilesDigest(paths, [5, 0, 40_000])
  for (const [i, abs] of paths.entries()) {
    const alone = (await readFileDigest(abs)) as PreparedFile
    const got = together[i]
    t.ok(got, `${abs} read`)
    t.strictSame(got!.identity, alone.identity, 'same identity')
    t.strictSame(got!.contentId, alone.contentId, 'same content id')
    t.strictSame(got!.bytes, alone.bytes, 'same bytes')
    t.equal(got!.abs, abs)
  }
})

t.test('a file gone, grown since the scan, or written just now is left to readFileDigest', { skip: nativeAvailable ? false : 'addon not built' }, async (t) => {
  const dir = testdir(t, { grown: 'short', fresh: 'new bytes', kept: 'kept' })
  utimesSync(join(dir, 'grown'), OLD, OLD)
  utimesSync(join(dir, 'kept'), OLD, OLD)
  appendFileSync(join(dir, 'grown'), ' and longer') // after its scan said 5 bytes; its mtime is now
  utimesSync(join(dir, 'grown'), OLD, OLD)
  writeFileSync(join(dir, 'fresh'), 'rewritten') // mtime now: maybe still being written
  const read = await readSmallFilesDigest(
    ['gone', 'grown', 'fresh', 'kept'].map((n) => join(dir, n)),
    [4, 5, 9, 4],
  )
  t.equal(read[0], null, 'gone')
  t.equal(read[1], null, 'grown past its size')
  t.equal(read[2], null, 'written less than the settle time ago')
  t.equal(read[3]?.bytes?.toString(), 'kept', 'the others are read all the same')
})
