import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { FinalizeResult } from '../../lib/etl/finalize.ts';
import { ingestFiles } from '../../lib/etl/ingest.ts';
import { readManifest } from '../../lib/etl/manifest.ts';
import type { EtlPlan } from '../../lib/etl/plan.ts';
import { readSchema } from '../../lib/etl/schema-store.ts';
import { readCuratedRows } from '../../lib/etl/tables.ts';
import { PipelineFailedError } from '../../lib/local/pipeline-runner.ts';
import { LocalPlatform } from '../../lib/local/platform.ts';
import { S3Store } from '../../lib/store/s3-store.ts';
import { useS3rver } from '../support/s3rver.ts';
import { tempDir } from '../support/temp.ts';

/**
 * The ETL state machine with the lake on S3: the handlers open `s3://<bucket>` from KILN_LAKE, exactly as in
 * Lambda, against a real S3-protocol server (s3rver). DuckDB cannot read S3 objects in place here, so every
 * shard downloads its object, or fetches only its byte range with a ranged GET.
 */
describe('ETL on an S3 lake (s3rver)', () => {
  const s3rver = useS3rver('kiln-etl');

  it('validates, quarantines, splits big objects into ranged reads and curates a version on S3', async () => {
    const s3 = s3rver();
    const dir = await tempDir();
    // The local platform provides the synthesized state machine and the handlers; the lake is the bucket.
    const platform = await LocalPlatform.open({ home: join(dir, 'home') });
    const lakeUri = `s3://${s3.bucket}/lake`;
    process.env.KILN_LAKE = lakeUri;
    const store = S3Store.fromUri(lakeUri);

    const rows = Array.from(
      { length: 6000 },
      (_, i) => `${i},${['red', 'green', 'blue'][i % 3]},"a, ""quoted""\nnote ${i}",${(i % 50) / 4}`,
    );
    rows[4321] = '4321,green,"broken",not-a-number';
    const file = join(dir, 'paint.csv');
    await writeFile(file, `id,colour,note,amount\n${rows.join('\n')}\n`);
    const small = join(dir, 'extra.jsonl');
    await writeFile(
      small,
      `${Array.from({ length: 40 }, (_, i) => JSON.stringify({ id: 9000 + i, colour: 'red', note: `n${i}`, amount: i })).join('\n')}\n`,
    );
    // The CSV lands first, so the contract is inferred from it; the JSON Lines file is a later landing.
    await ingestFiles(store, 'paint', [file]);
    await ingestFiles(store, 'paint', [small], { now: new Date(Date.now() + 1000) });

    const output = await (await platform.pipelines()).run('etl', 'Plan', {
      dataset: 'paint',
      shardBytes: 64 * 1024,
    });
    const result = output.result as FinalizeResult;
    const plan = output.plan as EtlPlan;
    expect(plan.shards.filter((s) => s.range).length).toBeGreaterThanOrEqual(3);
    expect(result).toMatchObject({ created: true, read: 6040, accepted: 6039, quarantined: 1 });

    const manifest = await readManifest(store, 'paint');
    expect(manifest.version).toBe(result.version);
    expect(manifest.sources.map((s) => s.read).sort((a, b) => a - b)).toEqual([40, 6000]);
    expect((await readSchema(store, 'paint')).columns.map((c) => c.type)).toEqual([
      'integer',
      'string',
      'string',
      'number',
    ]);
    const curated = [
      ...(await readCuratedRows(store, 'paint', result.version, 'train')),
      ...(await readCuratedRows(store, 'paint', result.version, 'test')),
    ];
    expect(curated).toHaveLength(6039);
    expect(curated.find((row) => row.id === 3)?.note).toBe('a, "quoted"\nnote 3');
    expect(await store.list('curated-staging/')).toEqual([]);
    expect((await store.list('quarantine/paint/')).length).toBe(1);

    // A second run of the same data is a no-op on S3 as well.
    const again = await (await platform.pipelines()).run('etl', 'Plan', { dataset: 'paint' });
    expect(again.result).toMatchObject({ version: result.version, created: false });

    // Above the threshold the run fails loudly and leaves the curated version alone.
    const junk = join(dir, 'junk.csv');
    await writeFile(junk, `id,colour,note,amount\n${'x,red,n,1\n'.repeat(2000)}`);
    await ingestFiles(store, 'paint', [junk], { now: new Date(Date.now() + 2000) });
    const failure = await (await platform.pipelines())
      .run('etl', 'Plan', { dataset: 'paint' })
      .catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(PipelineFailedError);
    expect((failure as PipelineFailedError).error).toBe('PolicyError');
    expect((await readManifest(store, 'paint')).version).toBe(result.version);
  });
});
