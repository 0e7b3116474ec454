#!/usr/bin/env node
// The heap's growth between major GCs follows its live size (src/util/heap-growth.ts).
const { followHeapGrowth } = await import('../dist/util/heap-growth.js')
followHeapGrowth(64 << 20)
const { main } = await import('../dist/cli/server.js')
process.exit(await main(process.argv.slice(2)))
