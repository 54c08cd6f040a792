import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { FinalizeResult } from '../../lib/etl/finalize.ts';
import { ingestFiles } from '../../lib/etl/ingest.ts';
import type { EtlPlan } from '../../lib/etl/plan.ts';
import { LocalPlatform } from '../../lib/local/platform.ts';
import { tempDir } from '../support/temp.ts';

describe('re-ingesting the same bytes', () => {
  it('keeps both immutable landings but builds the same dataset version from them', async () => {
    const dir = await tempDir();
    const platform = await LocalPlatform.open({ home: join(dir, 'home') });
    const file = join(dir, 'data.csv');
    await writeFile(
      file,
      `x,y\n${Array.from({ length: 50 }, (_, i) => `${i},${i % 2 ? 'a' : 'b'}`).join('\n')}\n`,
    );
    await platform.ingest([file], 'd');
    const first = (await platform.etl('d')).result as FinalizeResult;
    // A second landing of the same file, a second later (another ingest id, the same bytes).
    await ingestFiles(platform.store, 'd', [file], { now: new Date(Date.now() + 1000) });
    const output = await platform.etl('d');
    const second = output.result as FinalizeResult;
    expect((await platform.store.list('raw/d/')).length).toBe(2);
    expect(second.version).toBe(first.version);
    expect(second.created).toBe(false);
    expect(second.read).toBe(50);
    expect((output.plan as EtlPlan).rejected).toEqual([
      expect.objectContaining({ reason: expect.stringMatching(/^duplicate/) }),
    ]);
  });
});
