// The package version, read once from package.json, two levels above this module in src/, in dist/
// and in the bundles of dist/bundle/ (scripts/bundle.mjs).
import { readFileSync } from 'node:fs'

export const VERSION: string = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
).version
