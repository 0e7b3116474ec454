// The benchmark's side of the counting proxy (proxy-main.ts runs in a child process).
import { fork, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'

export interface WireCount {
  up: number
  down: number
  conns: number
  /** Connections still open. */
  open: number
}

export class CountingProxy {
  private seq = 0
  private readonly waiting = new Map<number, (c: WireCount) => void>()
  private constructor(private readonly child: ChildProcess, readonly port: number, readonly target: number) {
    child.on('message', (m: WireCount & { id: number }) => {
      const w = this.waiting.get(m.id)
      this.waiting.delete(m.id)
      w?.({ up: m.up, down: m.down, conns: m.conns, open: m.open })
    })
  }

  static async start(target: number): Promise<CountingProxy> {
    const script = fileURLToPath(new URL('./proxy-main.js', import.meta.url))
    const child = fork(script, [String(target)], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] })
    const port = await new Promise<number>((resolve, reject) => {
      let buf = ''
      child.stdout!.on('data', (d: Buffer) => {
        buf += d.toString()
        const m = /listening (\d+)/.exec(buf)
        if (m) resolve(Number(m[1]))
      })
      child.on('exit', (c) => reject(new Error(`proxy exited (${c})`)))
    })
    return new CountingProxy(child, port, target)
  }

  private ask(cmd: 'stats' | 'reset'): Promise<WireCount> {
    const id = ++this.seq
    return new Promise((resolve) => {
      this.waiting.set(id, resolve)
      this.child.send({ cmd, id })
    })
  }

  /** The counts since the last reset, and resets them; first waits (up to `ms`) for every connection to close. */
  async take(ms = 3000): Promise<WireCount> {
    const deadline = Date.now() + ms
    while ((await this.stats()).open > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5))
    return this.ask('reset')
  }

  stats(): Promise<WireCount> {
    return this.ask('stats')
  }

  get pid(): number {
    return this.child.pid!
  }

  stop(): void {
    this.child.disconnect()
    this.child.kill('SIGTERM')
  }
}
