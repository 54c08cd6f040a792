import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readTableFile } from '../../lib/etl/tables.ts';
import { LocalPlatform, REPO_ROOT } from '../../lib/local/platform.ts';
import { predictRows } from '../../lib/registry/batch-predict.ts';
import { RegistryModelSource } from '../../lib/registry/model-source.ts';
import { silentLogger } from '../../lib/serving/model-host.ts';
import { createInferenceServer } from '../../lib/serving/server.ts';
import { tempDir } from '../support/temp.ts';

describe('batch scoring and the online server', () => {
  it('give identical predictions for the same raw rows (same transform, same runtime)', async () => {
    const dir = await tempDir();
    const platform = await LocalPlatform.open({ home: join(dir, 'home') });
    await platform.ingest([join(REPO_ROOT, 'examples', 'data', 'churn.csv')], 'churn');
    await platform.etl('churn');
    await platform.train({ dataset: 'churn', target: 'churn' });

    // 40 raw rows without the target, as a user's scoring file.
    const lines = (await readFile(join(REPO_ROOT, 'examples', 'data', 'churn.csv'), 'utf8'))
      .trim()
      .split('\n');
    const header = (lines[0] ?? '').split(',');
    const targetIndex = header.indexOf('"churn"');
    const drop = (line: string) =>
      line
        .split(',')
        .filter((_, i) => i !== targetIndex)
        .join(',');
    const sample = lines.slice(1, 41);
    const file = join(dir, 'score.csv');
    await writeFile(file, `${[lines[0] ?? '', ...sample].map(drop).join('\n')}\n`);

    const record = await platform.registry.resolve('churn');
    const batch = await predictRows(
      platform.registry,
      record,
      await readTableFile(file, { textColumns: true }),
    );

    const server = createInferenceServer({
      source: new RegistryModelSource(platform.registry),
      logger: silentLogger,
    });
    const { port } = await server.listen(0, '127.0.0.1');
    try {
      const response = await fetch(`http://127.0.0.1:${port}/invocations`, {
        method: 'POST',
        headers: { 'content-type': 'text/csv' },
        body: `${sample.map(drop).join('\n')}\n`,
      });
      expect(response.status).toBe(200);
      const online = ((await response.json()) as { predictions: unknown[] }).predictions;
      expect(online).toHaveLength(40);
      expect(online).toEqual(batch);
    } finally {
      await server.close();
    }
  });
});
