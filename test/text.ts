import t from 'tap'
import { decodeBody, encodeFrame } from '../src/protocol/codec.js'
import { MAX_TEXT_BYTES } from '../src/protocol/constants.js'
import { fitUtf8 } from '../src/protocol/text.js'

t.test('text that fits is kept as it is', async (t) => {
  t.equal(fitUtf8('', 10), '')
  t.equal(fitUtf8('abc', 3), 'abc')
  t.equal(fitUtf8('€€€', 9), '€€€', '9 bytes in 9')
})

t.test('longer text is cut between characters and marked with an ellipsis', async (t) => {
  t.equal(fitUtf8('abcdefghij', 8), 'abcde…')
  // 'a' then three-byte characters: a cut at byte 8 - 3 = 5 would split the second '€'
  const cut = fitUtf8('a€€€€', 8)
  t.equal(cut, 'a€…')
  t.ok(Buffer.byteLength(cut) <= 8)
  // four-byte characters (surrogate pairs in UTF-16) are never split either
  const emoji = fitUtf8('😀'.repeat(10), 13)
  t.equal(emoji, '😀😀…')
  t.notOk(emoji.includes('\uFFFD'))
})

t.test('an ERROR that quotes a long path is encoded within MAX_TEXT_BYTES and decodes', async (t) => {
  const message = `p/${'ü'.repeat(2_000)} does not exist`
  const frame = encodeFrame({ type: 'error', requestId: 7, code: 36, message })
  const decoded = decodeBody(frame[4]!, frame.subarray(5))
  t.match(decoded, { type: 'error', requestId: 7, code: 36 })
  const text = (decoded as { message: string }).message
  t.ok(Buffer.byteLength(text) <= MAX_TEXT_BYTES, `${Buffer.byteLength(text)} bytes`)
  t.ok(text.startsWith('p/üü') && text.endsWith('…'))
})
