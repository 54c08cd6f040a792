import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
let cached: string | undefined;

/** The code that trained a model: `KILN_CODE_VERSION` (set in images at build), else git commit, else package version. */
export function codeVersion(): string {
  if (cached) return cached;
  const fromEnv = process.env.KILN_CODE_VERSION;
  if (fromEnv) {
    cached = fromEnv;
    return cached;
  }
  const version = packageVersion();
  try {
    const commit = execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'ignore'],
    })
      .toString()
      .trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'ignore'],
    })
      .toString()
      .trim();
    cached = `kiln@${version}+git.${commit}${dirty ? '.dirty' : ''}`;
  } catch {
    cached = `kiln@${version}`;
  }
  return cached;
}

/**
 * Kiln's package version. In the repository package.json sits two levels above this file; in the bundled
 * training image (dist/train.mjs) the module moved, and package.json is in the working directory.
 */
function packageVersion(): string {
  for (const dir of [repoRoot, process.cwd()]) {
    try {
      const { name, version } = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (name === 'kiln' && version) return version;
    } catch {
      // not there: try the next place
    }
  }
  return 'unknown';
}
