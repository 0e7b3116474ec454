// Bundles the two programs for bin/: dist/bundle/sfmc.js and dist/bundle/sfmd.js, from what tsc left
// in dist/. Run by `npm run build`, after tsc.
//
// Why: node loads an ES module graph file by file, resolving, reading and compiling each. sfmc's
// graph is about 60 modules, and loading them cost about 70 ms of each run before any work, as much
// as the rest of a re-sync of 20,000 unchanged files (benchmark W8). One file saves about 40 ms.
//
// The bundles sit two levels below the package root, as every module in src/ and dist/ does that
// finds a file relative to itself (package.json in util/version.ts, the addon in fs/native.ts and
// fs/folder-addon.ts): import.meta.url in a bundle is the bundle's own. The native packages stay
// outside, loaded from node_modules as before. Code splitting keeps what only watch mode needs (the
// watcher and its native package) in a chunk of its own, loaded on the first watch.
import { build } from 'esbuild'
import { dirname, join, resolve } from 'node:path'
import { rmSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const outdir = join(root, 'dist', 'bundle')

rmSync(outdir, { recursive: true, force: true })
try {
  await build({
    absWorkingDir: root,
    entryPoints: { sfmc: 'dist/cli/client.js', sfmd: 'dist/cli/server.js' },
    outdir,
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    external: ['xxhash-addon', '@parcel/watcher'],
    logLevel: 'warning',
  })
} catch {
  // esbuild has printed its errors
  process.exit(1)
}
