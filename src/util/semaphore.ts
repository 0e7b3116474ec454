// A counting semaphore that serves waiters in the order they asked: whoever asks first is served first,
// so work that must proceed in order never starves behind work queued after it.

export class Semaphore {
  private readonly waiters: Array<() => void> = []

  constructor(private available: number) {}

  acquire(): Promise<void> {
    if (this.tryAcquire()) return Promise.resolve()
    return new Promise((resolve) => this.waiters.push(resolve))
  }

  /** Takes a unit now if one is free and nobody is waiting; false otherwise (nothing taken). */
  tryAcquire(): boolean {
    if (this.available > 0 && this.waiters.length === 0) {
      this.available--
      return true
    }
    return false
  }

  release(): void {
    const next = this.waiters.shift()
    if (next) next()
    else this.available++
  }

  /** Wakes every waiter (the resource went away); they must check for themselves why. */
  drain(): void {
    for (const w of this.waiters.splice(0)) w()
  }
}
