// Loads src/native/sfm_chunker.c, the optional addon that cuts chunks on the thread pool (see
// Chunker.pushOffThread in src/chunker.ts). Undefined when it is not built (scripts/build-native.mjs
// warned at install time) or when SFM_NO_CHUNKER_ADDON=1 asks for the JavaScript chunker alone.
import { createRequire } from 'node:module'

/**
 * The lengths of the chunks cut from bytes[start, end): every chunk with CDC_MAX_BYTES or more after
 * its start, or all of them when `final`. `table` is src/chunker.ts's CUT_TABLE. The bytes must not
 * change until the promise settles.
 */
export type CutChunks = (bytes: Uint8Array, start: number, end: number, final: boolean, table: Int32Array) => Promise<Uint32Array>

// Like every module that finds a file relative to itself, this one sits two levels below the
// repository root, in src/, dist/ and the bundles of dist/bundle/ alike.
const ADDON_PATH = '../../build/Release/sfm_chunker.node'

export const cutChunksOffThread: CutChunks | undefined = (() => {
  if (process.env.SFM_NO_CHUNKER_ADDON === '1') return undefined
  try {
    return (createRequire(import.meta.url)(ADDON_PATH) as { cutChunks: CutChunks }).cutChunks
  } catch {
    return undefined
  }
})()
