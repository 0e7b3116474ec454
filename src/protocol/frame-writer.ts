// Writes frames to a socket, gathering every frame sent during one turn of the event loop into one
// system call. Syncing many small files sends two or three frames per file from as many callbacks; one
// write(2) each cost more CPU than encoding them (and as many TCP segments, with Nagle off).
import type { Socket } from 'node:net'
import { encodeMessage } from './codec.js'
import type { Message } from './messages.js'

export class FrameWriter {
  private corked = false

  constructor(private readonly socket: Socket) {}

  /** Queues the frame; returns false once the socket's buffer is over its high-water mark. */
  send(msg: Message): boolean {
    const socket = this.socket
    if (socket.destroyed || socket.writableEnded) return true
    if (!this.corked) {
      this.corked = true
      socket.cork()
      setImmediate(this.flush) // end() uncorks at once, so a closing frame is never held back
    }
    let ok = true
    for (const part of encodeMessage(msg)) ok = socket.write(part)
    return ok
  }

  private readonly flush = (): void => {
    this.corked = false
    this.socket.uncork()
  }
}
