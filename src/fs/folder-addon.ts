// Loads src/native/sfm_folder.c, the optional addon that reads the client's folder in whole jobs
// (see list-dir.ts). Undefined when it is not built (scripts/build-native.mjs
// warned at install time) or when SFM_NO_FOLDER_ADDON=1 asks for the portable path, as the tests do.
import { createRequire } from 'node:module'
import { getSystemErrorName } from 'node:util'

export interface FolderBinding {
  listDir(path: string, noFollow: boolean): Promise<Buffer>
}

// src/fs/folder-addon.ts and dist/fs/folder-addon.js both sit two levels below the repository root.
const ADDON_PATH = '../../build/Release/sfm_folder.node'

export const folderBinding: FolderBinding | undefined = (() => {
  if (process.env.SFM_NO_FOLDER_ADDON === '1') return undefined
  try {
    return createRequire(import.meta.url)(ADDON_PATH) as FolderBinding
  } catch {
    return undefined
  }
})()

/** A Node-style error for an errno the addon returned. */
export function errnoError(errno: number, syscall: string, path: string): NodeJS.ErrnoException {
  const code = getSystemErrorName(-errno)
  return Object.assign(new Error(`${code}: ${syscall} failed, '${path}'`), { errno: -errno, code, syscall, path })
}
