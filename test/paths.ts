import t from 'tap'
import { ProtocolError } from '../src/protocol/errors.js'
import {
  checkWirePath,
  describePath,
  isSameOrBelow,
  isValidWirePath,
  joinWire,
  nameProblem,
  parentOf,
} from '../src/protocol/paths.js'

const name255 = 'a'.repeat(255)
const name256 = 'a'.repeat(256)
// 85 three-byte characters are 255 bytes but only 85 UTF-16 units: the byte count is what is limited.
const euro85 = '€'.repeat(85)
const euro86 = '€'.repeat(86)
// 16 segments of 255 bytes and 15 slashes make 4095 bytes. 4096 bytes with no segment above 255:
// 15 segments of 255, one of 200, one of 55, and 16 slashes.
const long4095 = Array.from({ length: 16 }, () => name255).join('/')
const long4096 = [...Array.from({ length: 15 }, () => name255), 'b'.repeat(200), 'c'.repeat(55)].join('/')

const cases: [description: string, path: string, valid: boolean][] = [
  ['a plain name', 'a', true],
  ['a nested path', 'src/main.c', true],
  ['the empty path', '', false],
  ['a ".." segment', '..', false],
  ['a ".." segment in the middle', 'a/../b', false],
  ['a ".." segment at the end', 'a/..', false],
  ['a "." segment', '.', false],
  ['a "." segment in the middle', 'a/./b', false],
  ['an absolute path', '/etc/passwd', false],
  ['a trailing slash', 'a/', false],
  ['an empty segment', 'a//b', false],
  ['a NUL byte', 'a\0b', false],
  ['a 255-byte segment', name255, true],
  ['a 256-byte segment', name256, false],
  ['a 255-byte segment of 3-byte characters', `x/${euro85}`, true],
  ['a 258-byte segment of 3-byte characters', `x/${euro86}`, false],
  ['a 4095-byte path', long4095, true],
  ['a 4096-byte path', long4096, false],
  ['".sfm" as the first segment', '.sfm', false],
  ['".sfm" as the first segment of a longer path', '.sfm/tmp/x', false],
  ['".sfm" below the root', 'a/.sfm', true],
  ['".sfmx" at the top', '.sfmx', true],
  ['".sfm." at the top', '.sfm.', true],
  ['dot names that are not . or ..', '.../..a/.b', true],
  ['a backslash', 'a\\b', true],
  ['a leading dash', '-rf', true],
  ['spaces and control characters', ' a b \t\x01', true],
  ['NFC text', 'caf\u00e9', true],
  ['NFD text', 'cafe\u0301', true],
  ['an astral character', 'emoji-\u{1f600}', true],
  ['a lone high surrogate', 'a\ud800b', false],
  ['a lone low surrogate', '\udc00', false],
  ['a reversed surrogate pair', '\udc00\ud800', false],
]

t.test('checkWirePath follows [M-PATH-1]', async t => {
  for (const [description, path, valid] of cases) {
    t.equal(isValidWirePath(path), valid, `${valid ? 'accepts' : 'rejects'} ${description}`)
    if (valid) {
      t.doesNotThrow(() => checkWirePath(path), description)
    } else {
      t.throws(() => checkWirePath(path), { name: 'ProtocolError', code: 'SFM_ERR_BAD_PATH' }, description)
    }
  }
})

t.test('rejects with a one-line message that names the reason', async t => {
  try {
    checkWirePath('a/../b\n')
    t.fail('did not throw')
  } catch (err) {
    t.ok(err instanceof ProtocolError)
    const { message, wireCode } = err as ProtocolError
    t.match(message, /"\.\." segment/)
    t.notMatch(message, /\n/, 'the message is one line')
    t.equal(wireCode, 9)
  }
  const error = t.throws(() => checkWirePath('x'.repeat(5000))) as Error
  t.match(error.message, /longer than 4095 bytes/)
  t.ok(error.message.length < 200, 'a long path is shortened in the message')
})

t.test('measures 4095 and 4096 bytes exactly', async t => {
  t.equal(Buffer.byteLength(long4095), 4095)
  t.equal(Buffer.byteLength(long4096), 4096)
  t.match(t.throws(() => checkWirePath(long4096)), { message: /longer than 4095 bytes/ })
})

t.test('keeps NFC and NFD apart', async t => {
  t.not('caf\u00e9', 'cafe\u0301')
  t.ok(isValidWirePath('caf\u00e9') && isValidWirePath('cafe\u0301'))
})

t.test('nameProblem checks one segment', async t => {
  t.equal(nameProblem('a'), null)
  t.equal(nameProblem('.sfm'), null, 'reservation depends on position, not the name')
  t.match(nameProblem(''), /empty/)
  t.match(nameProblem('..'), /".."/)
  t.match(nameProblem('.'), /"\."/)
  t.match(nameProblem('a/b'), /"\/"/)
  t.match(nameProblem('a\0'), /NUL/)
  t.match(nameProblem('\ud800'), /UTF-8/)
  t.match(nameProblem(name256), /255/)
  t.equal(nameProblem(name255), null)
})

t.test('parentOf', async t => {
  t.equal(parentOf('a'), null)
  t.equal(parentOf('a/b'), 'a')
  t.equal(parentOf('a/b/c'), 'a/b')
})

t.test('joinWire', async t => {
  t.equal(joinWire(null, 'a'), 'a')
  t.equal(joinWire('', 'a'), 'a')
  t.equal(joinWire('a/b', 'c'), 'a/b/c')
  t.equal(joinWire(parentOf('x/y'), 'z'), 'x/z')
})

t.test('isSameOrBelow compares whole segments', async t => {
  const table: [string, string, boolean][] = [
    ['a', 'a', true],
    ['a/b', 'a', true],
    ['a/b/c', 'a', true],
    ['a/b/c', 'a/b', true],
    ['ab', 'a', false],
    ['a', 'a/b', false],
    ['b/a', 'a', false],
    ['a-b/c', 'a', false],
  ]
  for (const [path, ancestor, expected] of table) {
    t.equal(isSameOrBelow(path, ancestor), expected, `${path} below ${ancestor}: ${expected}`)
  }
})

t.test('describePath quotes and shortens', async t => {
  t.equal(describePath('a\nb'), '"a\\nb"')
  t.ok(describePath('y'.repeat(1000)).length < 100)
})
