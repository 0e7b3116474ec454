// A lock file naming the process that holds it, by pid and start time: a lock left by a process that
// is gone (or whose pid now belongs to another program) is taken over; a live holder, this process
// included, is refused.
import { readFileSync } from 'node:fs'
import { readFile, rm, writeFile } from 'node:fs/promises'

export class LockHeld extends Error {
  constructor(readonly pid: number) {
    super(`held by pid ${pid}`)
  }
}

/** The kernel's start time of a process (in clock ticks since boot), or null if there is none. */
function startTimeOf(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // the command name in field 2 may contain spaces: count fields after its closing parenthesis
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null
  } catch {
    return null
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

export class PidLock {
  private readonly content = `${process.pid} ${startTimeOf(process.pid) ?? '?'}\n`
  private held = false

  constructor(readonly path: string) {}

  /** Takes the lock, or throws LockHeld naming the live holder. */
  async acquire(): Promise<void> {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        await writeFile(this.path, this.content, { flag: 'wx' })
        this.held = true
        return
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      }
      const [pidText, start] = (await readFile(this.path, 'utf8').catch(() => '')).trim().split(' ')
      const pid = Number(pidText)
      const holderLives = pid > 0 && alive(pid) && (start === undefined || start === '?' || startTimeOf(pid) === start)
      if (holderLives) throw new LockHeld(pid)
      await rm(this.path, { force: true })
    }
    throw new LockHeld(0)
  }

  async release(): Promise<void> {
    if (!this.held) return
    this.held = false
    const now = await readFile(this.path, 'utf8').catch(() => '')
    if (now === this.content) await rm(this.path, { force: true })
  }
}
