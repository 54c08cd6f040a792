import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ingestFiles } from '../../lib/etl/ingest.ts';
import { runEtl } from '../../lib/etl/run.ts';
import { FileSystemStore } from '../../lib/store/fs-store.ts';
import { tempDir } from '../support/temp.ts';

describe('re-ingesting the same bytes', () => {
  it('keeps both immutable landings but builds the same dataset version from them', async () => {
    const dir = await tempDir();
    const store = new FileSystemStore(join(dir, 'lake'));
    const file = join(dir, 'data.csv');
    await writeFile(
      file,
      `x,y\n${Array.from({ length: 50 }, (_, i) => `${i},${i % 2 ? 'a' : 'b'}`).join('\n')}\n`,
    );
    await ingestFiles(store, 'd', [file]);
    const first = await runEtl(store, { dataset: 'd' });
    await ingestFiles(store, 'd', [file], { now: new Date(Date.now() + 1000) });
    const second = await runEtl(store, { dataset: 'd' });
    expect((await store.list('raw/d/')).length).toBe(2);
    expect(second.version).toBe(first.version);
    expect(second.created).toBe(false);
    expect(second.read).toBe(50);
    expect(second.plan.rejected).toEqual([
      expect.objectContaining({ reason: expect.stringMatching(/^duplicate/) }),
    ]);
  });
});
