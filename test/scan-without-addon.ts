// The same tests as scan.ts, on the portable path: readdir and one lstat per entry, as on a machine
// where the native addon could not be built.
process.env.SFM_NO_FOLDER_ADDON = '1'
await import('./scan.js')
