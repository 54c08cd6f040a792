import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { IntegrityError, ValidationError } from '../core/errors.ts';

const HOME_MARKER = 'kiln.json';
const HomeMarkerSchema = z.object({
  kind: z.literal('kiln.home'),
  version: z.literal(1),
  createdAt: z.string(),
});

/** The folders of a local platform home (`.kiln/` by default). */
export interface KilnHome {
  dir: string;
  lakeDir: string;
  jobsDir: string;
  eventsLog: string;
}

/**
 * Opens (and on first use creates) a platform home. A folder that has files but no valid marker is refused
 * rather than written into, so a typo in `--home` or a damaged home never gets files mixed into it.
 */
export async function openHome(dir: string): Promise<KilnHome> {
  const root = resolve(dir);
  const markerPath = join(root, HOME_MARKER);
  let entries: string[] = [];
  try {
    entries = await readdir(root);
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === 'ENOTDIR') throw new ValidationError(`--home ${dir} is a file, not a folder`);
    if (code !== 'ENOENT') throw error;
  }
  if (entries.includes(HOME_MARKER)) {
    let marker: unknown;
    try {
      marker = JSON.parse(await readFile(markerPath, 'utf8'));
    } catch (error) {
      throw new IntegrityError(
        `${markerPath} is corrupt (not JSON); move the home aside or repair the file`,
        {
          cause: error,
        },
      );
    }
    if (!HomeMarkerSchema.safeParse(marker).success) {
      throw new IntegrityError(
        `${markerPath} is not a Kiln home marker (version 1); refusing to use ${root}`,
      );
    }
  } else if (entries.length > 0) {
    throw new ValidationError(
      `${root} is not empty and is not a Kiln home (no ${HOME_MARKER}); choose another --home`,
    );
  } else {
    await mkdir(root, { recursive: true });
    const marker = { kind: 'kiln.home', version: 1, createdAt: new Date().toISOString() };
    await writeFile(markerPath, `${JSON.stringify(marker, null, 2)}\n`, { flag: 'wx' }).catch(
      (error: unknown) => {
        if ((error as { code?: string }).code !== 'EEXIST') throw error;
      },
    );
  }
  const home = {
    dir: root,
    lakeDir: join(root, 'lake'),
    jobsDir: join(root, 'jobs'),
    eventsLog: join(root, 'events.jsonl'),
  };
  await mkdir(home.lakeDir, { recursive: true });
  await mkdir(home.jobsDir, { recursive: true });
  return home;
}
