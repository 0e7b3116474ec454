#!/usr/bin/env node
// The heap's growth between major GCs follows its live size (src/util/heap-growth.ts); it is set
// before the real work starts. The program itself is one bundle (scripts/bundle.mjs).
const { followHeapGrowth } = await import('../dist/util/heap-growth.js')
followHeapGrowth(32 << 20, 50)
const { main } = await import('../dist/bundle/sfmc.js')
process.exit(await main(process.argv.slice(2)))
