#!/usr/bin/env node
// The program is one bundle (scripts/bundle.mjs).
import { main } from '../dist/bundle/sfmd.js'
process.exit(await main(process.argv.slice(2)))
