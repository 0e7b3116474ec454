// Which paths the client leaves alone: the patterns of `.sfmignore` at the root of the folder, in
// gitignore syntax (the `ignore` package implements it), and those given with --ignore. An ignored
// path is neither uploaded nor deleted on the mirror; what is below an ignored directory is ignored
// too, as in git.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import ignore, { type Ignore } from 'ignore'

export const IGNORE_FILE = '.sfmignore'

export class IgnoreRules {
  private matcher: Ignore
  /** The text of .sfmignore the rules were built from, to tell whether an edit changed anything. */
  private fileText: string | null = null

  constructor(
    private readonly root: string,
    private readonly extra: readonly string[] = [],
  ) {
    this.matcher = ignore().add([...extra])
  }

  get active(): boolean {
    return this.extra.length > 0 || (this.fileText !== null && this.fileText.trim() !== '')
  }

  /** Reads .sfmignore again; returns whether the rules changed. */
  async reload(): Promise<boolean> {
    let text: string | null
    try {
      text = await readFile(join(this.root, IGNORE_FILE), 'utf8')
    } catch {
      text = null
    }
    if (text === this.fileText) return false
    this.fileText = text
    this.matcher = ignore().add([...this.extra]).add(text ?? '')
    return true
  }

  /** Whether a wire path (a directory when `isDir`) is ignored, itself or through a parent. */
  ignores(path: string, isDir: boolean): boolean {
    if (!this.active) return false
    return this.matcher.ignores(isDir ? `${path}/` : path)
  }
}
