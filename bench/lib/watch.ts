// W9: latency of watch mode. Writes files one by one into <src>/w9, `intervalMs` apart, and measures for
// each the time from close() returning to the file being complete at its final path in the mirror; then
// deletes them the same way and measures the time to disappearance.
//
// The mirror is observed with inotify (fs.watch on <mirror>/w9: both tools rename complete files into
// place, so the first appearance of the final name is the complete file) plus a 2 ms stat poll as a safety
// net for missed events.
import { closeSync, openSync, statSync, unlinkSync, watch, writeSync, type FSWatcher } from 'node:fs'
import { join } from 'node:path'
import { KeyStream, prng } from './data.js'
import { now, sleep } from './util.js'

export interface LatencyResult {
  create: number[]
  remove: number[]
  /** Files that never arrived (or never vanished) within the deadline. */
  missedCreate: number
  missedRemove: number
  /** For each missed file: what the mirror had at the deadline. */
  missedDetail: string[]
}

interface Pending {
  t: number
  size: number
  kind: 'create' | 'remove'
}

export async function latencyTest(srcDir: string, mirrorDir: string, n: number, intervalMs: number, seed: string, deadlineMs = 15_000): Promise<LatencyResult> {
  const rnd = prng(`${seed}/w9-sizes`)
  const ks = new KeyStream(`${seed}/w9-bytes`)
  const pending = new Map<string, Pending>()
  const create: number[] = []
  const remove: number[] = []

  const check = (name: string) => {
    const p = pending.get(name)
    if (!p) return
    let size = -1
    try {
      size = statSync(join(mirrorDir, name)).size
    } catch {
      size = -1
    }
    if (p.kind === 'create' ? size === p.size : size === -1) {
      const dt = now() - p.t
      ;(p.kind === 'create' ? create : remove).push(dt)
      pending.delete(name)
    }
  }

  let watcher: FSWatcher | null = null
  const startWatch = () => {
    try {
      watcher = watch(mirrorDir, (_ev, name) => {
        if (name) check(String(name))
      })
      watcher.on('error', () => {
        watcher = null
      })
    } catch {
      watcher = null
    }
  }
  startWatch()
  const poll = setInterval(() => {
    if (!watcher) startWatch()
    for (const name of [...pending.keys()]) check(name)
  }, 2)

  const names: string[] = []
  const missedDetail: string[] = []
  const phase = async (kind: 'create' | 'remove'): Promise<number> => {
    const t0 = now() + 20
    for (let i = 0; i < n; i++) {
      const due = t0 + i * intervalMs
      const wait = due - now()
      if (wait > 0) await sleep(wait)
      if (kind === 'create') {
        const name = `f${String(i).padStart(4, '0')}-${seed.replace(/[^a-z0-9]/gi, '')}.txt`
        names.push(name)
        const size = 1024 + Math.floor(rnd() * 3 * 1024)
        const fd = openSync(join(srcDir, name), 'w', 0o644)
        writeSync(fd, ks.next(size))
        closeSync(fd)
        pending.set(name, { t: now(), size, kind })
        check(name)
      } else {
        const name = names[i]!
        unlinkSync(join(srcDir, name))
        pending.set(name, { t: now(), size: 0, kind })
        check(name)
      }
    }
    const deadline = now() + deadlineMs
    while (pending.size > 0 && now() < deadline) await sleep(5)
    const missed = pending.size
    for (const [name, p] of pending) {
      let seen = 'absent'
      try {
        seen = `${statSync(join(mirrorDir, name)).size} bytes`
      } catch {
        /* absent */
      }
      missedDetail.push(`${p.kind} ${name}: expected ${p.kind === 'create' ? `${p.size} bytes` : 'absent'}, mirror has ${seen} ${((now() - p.t) / 1000).toFixed(1)} s after the change`)
    }
    pending.clear()
    return missed
  }

  try {
    const missedCreate = await phase('create')
    await sleep(1000)
    const missedRemove = await phase('remove')
    return { create, remove, missedCreate, missedRemove, missedDetail }
  } finally {
    clearInterval(poll)
    ;(watcher as FSWatcher | null)?.close()
  }
}
