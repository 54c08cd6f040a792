import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LocalPlatform } from '../../lib/local/platform.ts';
import { captureKey } from '../../lib/serving/capture.ts';
import { runKiln } from '../support/cli.ts';
import { tempDir } from '../support/temp.ts';
import { churnRows, registerChurnModel, requestRows } from './monitoring-fixtures.ts';

/** A platform home with the churn model and 300 captured rows shifted by one standard deviation. */
async function home(): Promise<{ dir: string; ids: string[]; truth: string[] }> {
  const dir = await tempDir('kiln-monitor-cli-');
  const platform = await LocalPlatform.open({ home: dir });
  await registerChurnModel(platform.registry);
  const rows = churnRows(300, 81, { shift: 1 });
  const time = new Date('2026-04-01T08:00:00Z');
  const ids = rows.map((_, i) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`);
  const lines = requestRows(rows).map((row, i) =>
    JSON.stringify({
      requestId: ids[i],
      time: time.toISOString(),
      model: 'churn',
      version: '1',
      inputs: [row],
      outputs: [{ label: 'no' }],
    }),
  );
  await platform.store.put(captureKey('capture', 'churn', '1', time), `${lines.join('\n')}\n`);
  return { dir, ids, truth: rows.map((row) => String(row.churned)) };
}

describe('kiln monitor and kiln labels ingest', () => {
  it('prints the drift summary, a table and the path of the HTML page; --json gives the report', async () => {
    const { dir } = await home();
    const human = await runKiln(['monitor', '--model', 'churn@1', '--home', dir]);
    expect(human.stderr).toBe('');
    expect(human.code).toBe(0);
    const lines = human.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(
      /^churn@1: DRIFT in 1 of 3 features \(x\) and the prediction \(300 rows in 300 requests/,
    );
    expect(human.stdout).toMatch(/\n {2}x +numeric +300 .* DRIFT\n/);
    const html = lines.at(-1)?.replace(/^report: /, '') ?? '';
    expect(html.startsWith(join(dir, 'lake', 'monitoring', 'churn', '1', 'drift'))).toBe(true);
    expect(await readFile(html, 'utf8')).toContain('<svg');

    const json = await runKiln(['monitor', '--model', 'churn', '--json', '--home', dir]);
    const parsed = JSON.parse(json.stdout) as {
      report: { status: string; keys: { json: string } };
      quality: null;
    };
    expect(parsed.report.status).toBe('drift');
    expect(parsed.quality).toBeNull();
    // DriftDetected went through the local bus into the home's event log.
    const events = (await readFile(join(dir, 'events.jsonl'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(events.filter((e) => e.detailType === 'DriftDetected')).toHaveLength(2);
  });

  it('ingests labels, reports unknown request ids, and shows quality', async () => {
    const { dir, ids, truth } = await home();
    const file = join(dir, 'labels.csv');
    const rows = ids.map((id, i) => `${id},${truth[i]}`);
    await writeFile(file, `requestId,label\n${rows.join('\n')}\nnot-a-request,yes\n`);
    const result = await runKiln(['labels', 'ingest', file, '--model', 'churn', '--home', dir]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('churn: ingested 301 labels from labels.csv (column label)');
    expect(result.stdout).toContain('1 label names no captured request: not-a-request');
    expect(result.stdout).toMatch(/quality: churn@1: accuracy 0\.\d{4} on 300 labelled rows/);

    const refused = await runKiln(['labels', 'ingest', file, '--model', 'churn@1', '--home', dir]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/labels belong to a model, not a version/);
    const missing = await runKiln(['monitor', '--model', 'nothere', '--home', dir]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^kiln: .*nothere/);
  });
});
