#!/usr/bin/env node
// V8 lets its old generation grow up to four times what the last major GC left live, when collecting
// is cheap, and it is for sfmc: a first pass over 100,000 small files leaves about 45 MiB live and
// peaked at 230-280 MiB RSS. sfmc runs for months beside the user's own work, so it asks for 1.5 times
// instead: about 170-180 MiB, for about 0.05 s more of major GC over that pass (BENCHMARKS.md, W2).
// The flag is read at each GC, so setting it here, before the real work, is enough; a
// --heap-growing-percent given to node itself wins.
import { setFlagsFromString } from 'node:v8'

if (!process.execArgv.some((a) => a.startsWith('--heap-growing-percent'))) setFlagsFromString('--heap-growing-percent=50')
const { main } = await import('../dist/cli/client.js')
process.exit(await main(process.argv.slice(2)))
