// Uploading a big new file in one pass: read, chunk and send at the same time, instead of reading the
// whole file to build its content tree first and then reading it again to send what is missing.
//
// As the chunks come, they are grouped into the nodes of the tree's first level (the grouping rule of
// PROTOCOL.md 5.3 looks only at the entries themselves, so groups can be closed while reading). For each
// group HAVE? asks for the node, and for its chunks only if the server lacks the node (so a copy of a
// big file costs about 40 bytes per 2 MiB); many groups are in flight at once. The
// answers come back in order, and the group goes out as a REF to the node (content the server already
// has, a copy or a moved file), or as REFs and CHUNKs for its chunks. The data waiting for answers is
// bounded; the COMMIT follows once the whole file is read and found unchanged.
import { closeSync, constants as fsc, fstatSync, openSync, read } from 'node:fs'
import { Chunker } from '../chunker.js'
import { identityOf, sameIdentity, type FileIdentity } from '../digest.js'
import { hash128, hashKey } from '../hash.js'
import type { Ref } from '../protocol/messages.js'
import { ContentTree, groupClosesAfter, nodeIdOf } from '../tree.js'
import type { Connection } from './connection.js'
import type { KnownContent } from './known.js'

const READ_BLOCK_BYTES = 4 << 20
/**
 * Data of closed groups waiting for HAVE? answers: reading pauses above it. The group being filled
 * comes on top (at most MAX_FANOUT chunks of CDC_MAX_BYTES: groups follow the tree's rule exactly, or
 * their node ids would not be the ones the server knows).
 */
const MAX_PENDING_BYTES = 16 << 20

/**
 * The read blocks, reused once nothing needs their bytes: a new 4 MiB Buffer for every read made the
 * GC run and the kernel fault in and zero new pages, which cost more than cutting the chunks (a
 * copied 1 GiB file: 243 ms of GC), and dead blocks waiting for a major GC took tens of MiB of RSS. A
 * block is in use while the reader cuts it, while a group with chunks in it waits to be sent, and,
 * for chunks sent as CHUNK, until the socket has written them.
 */
class ReadBlocks {
  private readonly free: Buffer[] = []
  private readonly users = new Map<ArrayBufferLike, number>()
  /** Files being streamed: the free blocks are kept from one file to the next, and dropped a second after the last. */
  private streams = 0
  private lastClosed = 0

  open(): void {
    this.streams++
  }

  close(): void {
    if (--this.streams > 0) return
    const closed = ++this.lastClosed
    setTimeout(() => {
      if (this.streams === 0 && this.lastClosed === closed) this.free.length = 0
    }, 1_000).unref()
  }

  take(): Buffer {
    const block = this.free.pop() ?? Buffer.allocUnsafeSlow(READ_BLOCK_BYTES)
    this.users.set(block.buffer, 1)
    return block
  }

  hold(block: ArrayBufferLike): void {
    this.users.set(block, this.users.get(block)! + 1)
  }

  /** One user is done with `block`. */
  release(block: ArrayBufferLike): void {
    const left = this.users.get(block)! - 1
    if (left > 0) return void this.users.set(block, left)
    this.users.delete(block)
    this.free.push(Buffer.from(block as ArrayBuffer))
  }
}

const blocks = new ReadBlocks()

interface Group {
  ids: Buffer[]
  lengths: number[]
  data: Buffer[]
  /** Read blocks that `data` has views into, held until the group is sent. */
  blocks: ArrayBufferLike[]
  bytes: number
  /** The node over the group (two or more chunks), or null. */
  node: Buffer | null
  /** Answers for [node?, ...chunks], in that order; entries known before asking are answered true. */
  answers: Promise<boolean[]>
}

export interface StreamedFile {
  identity: FileIdentity
  tree: ContentTree
  contentId: Buffer
  dataBytes: number
  /** Every id sent as a REF (forgotten from the known set if the server says MISSING). */
  refs: Buffer[]
}

/**
 * Streams the file at `abs` into upload `uploadId`. Returns null if the file changed while it was read
 * (the caller ABORTs and tries again); throws if it vanished or the connection ended.
 */
export async function streamNewFile(abs: string, conn: Connection, known: KnownContent, uploadId: number): Promise<StreamedFile | null> {
  const fd = openSync(abs, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK)
  blocks.open()
  let reading: Promise<{ block: Buffer; n: number }> | null = null
  try {
    const before = identityOf(fstatSync(fd, { bigint: true }))
    const leafIds: Buffer[] = []
    const leafLengths: number[] = []
    const queue: Group[] = []
    let pending = 0 // bytes of closed groups not sent yet
    let dataBytes = 0
    const refs: Buffer[] = []
    const sent = new Set<string>()
    let group = newGroup()
    let wake: (() => void) | null = null
    let failure: unknown = null

    // Sends groups in file order as their answers arrive.
    let sending = Promise.resolve()
    const sendNext = () => {
      sending = sending.then(async () => {
        const g = queue.shift()
        if (!g) return
        let sentData = true // unless send() says otherwise
        try {
          sentData = await send(g)
        } catch (err) {
          failure ??= err
        }
        const release = () => g.blocks.forEach((block) => blocks.release(block))
        if (sentData) conn.afterWritten(release) // the socket holds views of the chunks until then
        else release()
        pending -= g.bytes
        wake?.()
      })
    }
    /** Sends the group; true if some of its bytes went out as CHUNK. */
    const send = async (g: Group): Promise<boolean> => {
      const answers = await g.answers
      const out: Ref[] = []
      let sentData = false
      const flush = () => {
        if (out.length > 0) conn.refs(uploadId, out.splice(0))
      }
      if (g.node && answers[0]) {
        out.push({ hash: g.node, length: g.bytes })
        refs.push(g.node)
      } else {
        const offset = g.node ? 1 : 0
        for (let i = 0; i < g.ids.length; i++) {
          const id = g.ids[i]!
          const key = hashKey(id)
          if (answers[offset + i] || sent.has(key)) {
            out.push({ hash: id, length: g.lengths[i]! }) // the server has it, or it came earlier in this upload
            if (answers[offset + i]) refs.push(id)
            continue
          }
          flush()
          await conn.writable()
          conn.chunk(uploadId, id, g.data[i]!)
          sentData = true
          sent.add(key)
          dataBytes += g.lengths[i]!
        }
      }
      flush()
      return sentData
    }

    const closeGroup = () => {
      if (group.ids.length === 0) return
      const g = group
      group = newGroup()
      g.node = g.ids.length >= 2 ? nodeIdOf(g.ids, g.lengths) : null
      pending += g.bytes
      const node = g.node
      const chunkAnswers = async (): Promise<boolean[]> => ask(g.ids)
      g.answers = node
        ? ask([node]).then(async ([has]) => (has ? [true, ...g.ids.map(() => false)] : [false, ...(await chunkAnswers())]))
        : chunkAnswers()
      g.answers.catch(() => {}) // a failure surfaces when the group is sent
      queue.push(g)
      sendNext()
    }

    let block: Buffer = Buffer.alloc(0)
    /** Answers for these ids: what is known already, and HAVE? for the rest. */
    const ask = async (ids: Buffer[]): Promise<boolean[]> => {
      const answers = ids.map((id) => known.has(id))
      const unknown = ids.filter((_, k) => !answers[k])
      if (unknown.length === 0) return answers
      const got = await conn.have(unknown)
      let j = 0
      ids.forEach((id, k) => {
        if (answers[k]) return
        answers[k] = got[j++]!
        if (answers[k]) known.add(id)
      })
      return answers
    }

    const sink = (view: Buffer) => {
      // A chunk inside the block just read can stay a view of it until its group is sent (the group
      // holds the block); one cut from the chunker's own tail buffer, which it reuses, must be copied.
      const inBlock = view.buffer === block.buffer
      const data = inBlock ? view : Buffer.from(view)
      if (inBlock && group.blocks[group.blocks.length - 1] !== block.buffer) {
        blocks.hold(block.buffer)
        group.blocks.push(block.buffer)
      }
      const id = hash128(data)
      leafIds.push(id)
      leafLengths.push(data.length)
      group.ids.push(id)
      group.lengths.push(data.length)
      group.data.push(data)
      group.bytes += data.length
      if (groupClosesAfter(id, group.ids.length)) closeGroup()
    }

    const chunker = new Chunker()
    // The next block is read while this one is cut (on the thread pool, where the addon is built).
    const readAt = (pos: number): Promise<{ block: Buffer; n: number }> => {
      const into = blocks.take()
      return new Promise((resolve, reject) =>
        read(fd, into, 0, into.length, pos, (err, n) => {
          if (err) {
            blocks.release(into.buffer)
            reject(err)
          } else resolve({ block: into, n })
        }),
      )
    }
    let next = readAt(0)
    reading = next
    for (let pos = 0; ; ) {
      const got = await next
      reading = null
      block = got.block
      const n = got.n
      pos += n
      if (n > 0) reading = next = readAt(pos)
      try {
        while (pending > MAX_PENDING_BYTES && failure === null) await new Promise<void>((r) => (wake = r))
        if (failure === null && n > 0) await chunker.pushOffThread(block.subarray(0, n), sink)
      } finally {
        blocks.release(block.buffer) // the reader is done with it; groups may still hold it
      }
      if (failure !== null || n === 0) break
    }
    if (failure !== null) throw failure
    chunker.finish(sink)
    closeGroup()
    await sending
    while (queue.length > 0) await sending // groups queued after the last wait
    if (failure !== null) throw failure
    const after = identityOf(fstatSync(fd, { bigint: true }))
    if (!sameIdentity(before, after)) return null
    const tree = ContentTree.fromLeaves(Buffer.concat(leafIds), leafLengths)
    return { identity: before, tree, contentId: tree.contentId, dataBytes, refs }
  } finally {
    // a read still under way must end before its descriptor is closed (and perhaps reused)
    const last = await (reading as Promise<{ block: Buffer }> | null)?.catch(() => null)
    if (last) blocks.release(last.block.buffer)
    closeSync(fd)
    blocks.close()
  }
}

function newGroup(): Group {
  return { ids: [], lengths: [], data: [], blocks: [], bytes: 0, node: null, answers: Promise.resolve([]) }
}
