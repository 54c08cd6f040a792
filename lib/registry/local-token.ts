import { randomBytes, randomUUID } from 'node:crypto';
import { link, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { IntegrityError } from '../core/errors.ts';

const TOKEN_FILE = 'registry.token';
const TOKEN_PATTERN = /^[A-Za-z0-9_-]{32,}$/;

/** Where the local registry token lives in a platform home. */
export function localTokenPath(homeDir: string): string {
  return join(homeDir, TOKEN_FILE);
}

/**
 * The bearer token of the local registry server: created on first use (256 random bits, file mode 0600,
 * created atomically so two processes starting at once agree on one token), read afterwards. A token file
 * other users can read is refused rather than used, as ssh does with keys.
 */
export async function ensureLocalToken(homeDir: string): Promise<string> {
  const path = localTokenPath(homeDir);
  await mkdir(homeDir, { recursive: true });
  const temp = join(homeDir, `.${TOKEN_FILE}.${randomUUID()}`);
  try {
    await writeFile(temp, `${randomBytes(32).toString('base64url')}\n`, { mode: 0o600, flag: 'wx' });
    // link(2) fails if the token exists: the first process wins and everyone reads its token.
    await link(temp, path).catch((error: unknown) => {
      if ((error as { code?: string }).code !== 'EEXIST') throw error;
    });
  } finally {
    await rm(temp, { force: true });
  }
  if (process.platform !== 'win32') {
    const mode = (await stat(path)).mode & 0o777;
    if ((mode & 0o077) !== 0) {
      throw new IntegrityError(
        `${path} is readable by other users (mode 0${mode.toString(8)}): run chmod 600 ${path}, or delete it to get a new token`,
      );
    }
  }
  const token = (await readFile(path, 'utf8')).trim();
  if (!TOKEN_PATTERN.test(token)) {
    throw new IntegrityError(`${path} does not hold a registry token: delete it and a new one is created`);
  }
  return token;
}
