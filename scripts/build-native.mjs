// Builds the optional native addon (build/Release/sfm_native.node) with node-gyp. Run by
// `npm install` (package.json "install") or by hand: `node scripts/build-native.mjs`.
//
// The addon is optional: without it sfm sets mtimes to the microsecond only and fsyncs each file
// instead of one syncfs(2). So a failed build prints one warning line and still exits 0, and
// `npm install` goes on. The full compiler output is kept in build/native-build.log.
// SFM_NATIVE_VERBOSE=1 streams node-gyp's output instead of capturing it.

import { spawnSync, execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const addon = join(root, 'build', 'Release', 'sfm_native.node')
const logFile = join(root, 'build', 'native-build.log')
const verbose = process.env.SFM_NATIVE_VERBOSE === '1'
const BUILD_TIMEOUT_MS = 5 * 60 * 1000

const warn = (why) => {
  why = why.split('\n')[0]
  console.warn(
    `sfm: warning: native addon not built (${why}); sfm will run without nanosecond mtimes ` +
      `and will fsync each file instead of one syncfs`,
  )
  process.exit(0)
}

// npm sets npm_config_node_gyp for lifecycle scripts; by hand, use npm's bundled copy.
const findNodeGyp = () => {
  const tail = join('node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js')
  const candidates = [
    () => process.env.npm_config_node_gyp,
    () => join(dirname(process.execPath), '..', 'lib', tail), // /usr/bin/node -> /usr/lib/node_modules
    () => join(dirname(process.execPath), tail), // Windows layout
    () => {
      try {
        const globalRoot = execFileSync('npm', ['root', '-g'], { encoding: 'utf8', timeout: 30_000 })
        return join(globalRoot.trim(), 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js')
      } catch {
        return undefined // npm not on PATH
      }
    },
    () => join(root, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ]
  for (const candidate of candidates) {
    const path = candidate()
    if (path && existsSync(path)) return path
  }
  return undefined
}

// Without --nodedir, node-gyp downloads headers, which fails offline. Node's own headers next to
// the binary (<prefix>/include/node) are the ones to build against.
const findNodeDir = () => {
  if (process.env.npm_config_nodedir) return process.env.npm_config_nodedir
  const prefix = resolve(dirname(process.execPath), '..')
  return existsSync(join(prefix, 'include', 'node', 'node_api.h')) ? prefix : undefined
}

const nodeGyp = findNodeGyp()
if (nodeGyp === undefined) warn('node-gyp not found')

const args = [nodeGyp, 'rebuild']
const nodeDir = findNodeDir()
if (nodeDir !== undefined) args.push(`--nodedir=${nodeDir}`)

const run = spawnSync(process.execPath, args, {
  cwd: root,
  stdio: verbose ? 'inherit' : 'pipe',
  encoding: 'utf8',
  timeout: BUILD_TIMEOUT_MS,
})
if (!verbose) {
  mkdirSync(dirname(logFile), { recursive: true })
  writeFileSync(logFile, `$ node ${args.join(' ')}\n${run.stdout ?? ''}${run.stderr ?? ''}`)
}
const logHint = verbose ? '' : `, see ${logFile}`
if (run.error) warn(`${run.error.message}${logHint}`)
if (run.status !== 0) warn(`node-gyp exited with ${run.status ?? run.signal}${logHint}`)

// A build that links but cannot load (wrong ABI, missing symbol) is no better than none.
try {
  const binding = createRequire(import.meta.url)(addon)
  if (typeof binding.utimesNs !== 'function') throw new Error('utimesNs missing')
} catch (err) {
  warn(`built addon does not load: ${err instanceof Error ? err.message : String(err)}`)
}
console.log(`sfm: native addon built (${addon})`)
