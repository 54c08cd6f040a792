import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runKiln } from '../support/cli.ts';
import { tempDir } from '../support/temp.ts';

const SHARED = join(import.meta.dirname, '..', '..', '..', 'shared', 'datasets');

interface UpSummary {
  model: string;
  version: number;
  metrics: Record<string, number>;
  endpoint: string;
  predictions: Array<{
    label?: string;
    probabilities?: Record<string, number>;
    value?: number;
    actual: unknown;
  }>;
  dataset: { name: string; version: string; rows: number; quarantined: number };
}

describe('kiln up --once (the whole loop, end to end)', () => {
  it('ingests the sample, runs both state machines, serves the model and gets predictions over HTTP', async () => {
    const home = join(await tempDir(), 'home');
    const result = await runKiln(['up', '--once', '--json', '--home', home, '--port', '0']);
    expect(result.stderr).toContain('✔ etl');
    expect(result.code, result.stderr).toBe(0);
    const summary = JSON.parse(result.stdout) as UpSummary;
    expect(summary.model).toBe('churn');
    expect(summary.version).toBe(1);
    expect(summary.dataset.rows).toBeGreaterThan(3000);
    expect(summary.metrics.accuracy).toBeGreaterThan(0.9);
    expect(summary.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(summary.predictions).toHaveLength(3);
    for (const prediction of summary.predictions) {
      expect(['no', 'yes']).toContain(prediction.label);
      const probabilities = Object.values(prediction.probabilities ?? {});
      expect(probabilities.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
      // The label is the most probable class (labels derive from probabilities).
      expect(prediction.probabilities?.[prediction.label ?? '']).toBe(Math.max(...probabilities));
    }
    // The lake holds every zone the loop touched, and the registry has the lineage.
    const lake = join(home, 'lake');
    for (const zone of ['raw', 'curated', 'models', 'registry', 'runs'])
      expect(existsSync(join(lake, zone))).toBe(true);
    const captures = await readdir(join(lake, 'capture', 'churn', '1'), { recursive: true });
    expect(captures.some((file) => String(file).endsWith('.jsonl'))).toBe(true);

    const show = await runKiln(['models', 'show', 'churn@1', '--json', '--home', home]);
    expect(show.code, show.stderr).toBe(0);
    const record = JSON.parse(show.stdout) as { lineage: Record<string, unknown>; aliases: string[] };
    expect(record.lineage).toMatchObject({
      dataset: 'churn',
      datasetVersion: summary.dataset.version,
      algorithm: 'gbdt',
    });
    expect(record.aliases).toContain('champion');

    // Running the loop again on the same data changes nothing in the curated zone and gates the new model.
    const again = await runKiln(['up', '--once', '--json', '--home', home, '--port', '0']);
    expect(again.code, again.stderr).toBe(0);
    const second = JSON.parse(again.stdout) as UpSummary & { gate: { passed: boolean } };
    expect(second.dataset.version).toBe(summary.dataset.version);
    expect(second.version).toBe(2);
    expect(second.gate.passed).toBe(false);
    const manifest = JSON.parse(
      await readFile(join(lake, 'curated', 'churn', summary.dataset.version, 'manifest.json'), 'utf8'),
    ) as { rows?: unknown };
    expect(manifest).toBeTruthy();
  });

  it.runIf(existsSync(join(SHARED, 'diamonds.csv')))(
    'runs on a user regression data set (diamonds, target price)',
    async () => {
      const home = join(await tempDir(), 'home');
      const result = await runKiln([
        'up',
        '--once',
        '--json',
        '--home',
        home,
        '--port',
        '0',
        '--data',
        join(SHARED, 'diamonds.csv'),
        '--target',
        'price',
      ]);
      expect(result.code, result.stderr).toBe(0);
      const summary = JSON.parse(result.stdout) as UpSummary;
      expect(summary.metrics.rmse).toBeLessThan(800);
      expect(typeof summary.predictions[0]?.value).toBe('number');
    },
  );
});
