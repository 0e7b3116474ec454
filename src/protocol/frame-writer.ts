// Writes frames to a socket, gathering every frame sent during one turn of the event loop into one
// system call. Syncing many small files sends two or three frames per file from as many callbacks; one
// write(2) each cost more CPU than encoding them (and as many TCP segments, with Nagle off).
//
// Small parts (headers, small chunks) are copied into a shared block and reach the socket as one
// buffer per turn. Handed over one by one, each small file's bytes stayed referenced by the socket's
// queue while the peer was slower, long enough to be promoted to V8's old space, and tens of MiB of
// them waited there for a major GC (sfmc's peak RSS in benchmark W2). Large parts go as they are.
import type { Socket } from 'node:net'
import { encodeMessage } from './codec.js'
import type { Message } from './messages.js'

/** Parts up to this size are copied; copying them costs less than a socket write of their own. */
const COPY_MAX_BYTES = 32 << 10
const BLOCK_BYTES = 256 << 10
const NOTHING = Buffer.alloc(0)
const SPARE_BLOCKS = 4

export class FrameWriter {
  private corked = false
  private block: Buffer = Buffer.allocUnsafeSlow(0)
  /** Written blocks, ready for reuse. */
  private readonly spare: Buffer[] = []
  // block[start, end) holds copied bytes not yet handed to the socket; what is before `start` may
  // still be in the socket's queue and is never written again.
  private start = 0
  private end = 0

  constructor(private readonly socket: Socket) {}

  /** Queues the frame; returns false once the socket's buffer is over its high-water mark. */
  send(msg: Message): boolean {
    const socket = this.socket
    if (socket.destroyed || socket.writableEnded) return true
    if (!this.corked) {
      this.corked = true
      socket.cork()
      setImmediate(this.flush)
    }
    for (const part of encodeMessage(msg)) {
      if (part.length > COPY_MAX_BYTES) {
        this.handOver()
        socket.write(part)
        continue
      }
      if (this.end + part.length > this.block.length) this.nextBlock()
      part.copy(this.block, this.end)
      this.end += part.length
    }
    return socket.writableLength + (this.end - this.start) < socket.writableHighWaterMark
  }

  /**
   * Calls `done` once every part sent so far has been written to the kernel, or the socket is gone:
   * then the caller may reuse the memory of the big parts it handed over as they were.
   */
  afterWritten(done: () => void): void {
    const socket = this.socket
    if (socket.destroyed || socket.writableEnded) return done()
    socket.write(NOTHING, () => done()) // writes complete in order: this one's callback comes last
  }

  /** Hands everything queued to the socket now: call it before ending the socket. */
  readonly flush = (): void => {
    this.handOver()
    if (!this.corked) return
    this.corked = false
    this.socket.uncork()
  }

  /**
   * Moves on to a fresh block. A full one is reused once the socket has written it: a new block per
   * 256 KiB sent left tens of MiB of dead blocks waiting for a major GC (sfmc's peak RSS, benchmark W1).
   */
  private nextBlock(): void {
    const full = this.block
    this.handOver()
    if (full.length > 0) this.afterWritten(() => this.spare.length < SPARE_BLOCKS && this.spare.push(full))
    this.block = this.spare.pop() ?? Buffer.allocUnsafeSlow(BLOCK_BYTES)
    this.start = this.end = 0
  }

  private handOver(): void {
    if (this.end === this.start || this.socket.destroyed || this.socket.writableEnded) return
    this.socket.write(this.block.subarray(this.start, this.end))
    this.start = this.end
  }
}
