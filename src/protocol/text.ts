// Free text on the wire (ERROR messages, client names) has a byte limit, and what goes into it is not
// always ours to bound: an error about a path embeds a path of up to 4,095 bytes.

const ELLIPSIS = Buffer.from('…', 'utf8')

/** `text` if its UTF-8 form fits in `maxBytes`, else its longest prefix that does with '…', cut between characters. */
export function fitUtf8(text: string, maxBytes: number): string {
  if (text.length * 3 <= maxBytes) return text // no UTF-16 unit takes more than 3 UTF-8 bytes
  const bytes = Buffer.from(text, 'utf8')
  if (bytes.length <= maxBytes) return text
  let end = maxBytes - ELLIPSIS.length
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end-- // never split a character
  return bytes.toString('utf8', 0, end) + '…'
}
