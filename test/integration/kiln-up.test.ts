import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT, runKiln } from '../support/cli.ts';
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

    // `kiln serve` serves the champion and the registry API (bearer token from the home), until SIGTERM.
    await checkServe(home);

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

async function checkServe(home: string): Promise<void> {
  const child = spawn(process.execPath, ['bin/kiln.mjs', 'serve', '--port', '0', '--home', home], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<number>((resolve) => child.on('close', (code) => resolve(code ?? 1)));
  let stderr = '';
  const banner = await new Promise<string>((resolve, reject) => {
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      if (stderr.includes('Ctrl-C')) resolve(stderr);
    });
    child.on('close', () => reject(new Error(`kiln serve exited early: ${stderr}`)));
  });
  try {
    const [inferenceUrl, registryUrl] = [...banner.matchAll(/http:\/\/127\.0\.0\.1:\d+/g)].map((m) => m[0]);
    const token = (await readFile(join(home, 'registry.token'), 'utf8')).trim();
    expect((await fetch(`${inferenceUrl}/ping`)).status).toBe(200);
    expect((await fetch(`${registryUrl}/models`)).status).toBe(401);
    const listed = await fetch(`${registryUrl}/models`, { headers: { authorization: `Bearer ${token}` } });
    expect(listed.status).toBe(200);
    expect(await listed.json()).toMatchObject({ models: ['churn'] });
  } finally {
    child.kill('SIGTERM');
  }
  expect(await exited).toBe(0);
}
