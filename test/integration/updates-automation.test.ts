import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { KilnEvent } from '../../lib/core/events.ts';
import { LocalPlatform, REPO_ROOT } from '../../lib/local/platform.ts';
import { driftDetectedEvent } from '../../lib/monitoring/events.ts';
import { runMonitor } from '../../lib/monitoring/monitor.ts';
import { readTrainingConfig } from '../../lib/updates/config.ts';
import { listDeploymentRecords } from '../../lib/updates/deploy.ts';
import { shiftedRows } from '../../lib/updates/drill.ts';
import { startLocalAutomation } from '../../lib/updates/local.ts';
import { listRetrainingRuns, triggerKeys } from '../../lib/updates/retraining.ts';
import { tempDir } from '../support/temp.ts';

/**
 * The event → run wiring on the real local platform: landing data runs the synthesized ETL, its
 * EtlRunSucceeded and a flood of DriftDetected events open one debounce window, and closing it runs the
 * synthesized retraining state machine (ETL, plan, training pipeline, record) exactly once.
 */

function drift(n: number): KilnEvent {
  return driftDetectedEvent({
    model: 'churn',
    version: 1,
    generatedAt: new Date().toISOString(),
    since: null,
    until: null,
    requests: 100 + n,
    rows: 500,
    driftedFeatures: ['total_day_minutes'],
    driftedFeatureCount: 1,
    scores: { total_day_minutes: 0.5 },
    predictionDrift: true,
    predictionPsi: 0.3,
    reportKey: `monitoring/churn/1/drift/r${n}.json`,
    htmlKey: `monitoring/churn/1/drift/r${n}.html`,
  });
}

function csv(rows: Array<Record<string, unknown>>): string {
  const header = Object.keys(rows[0] ?? {});
  const cell = (v: unknown) => (typeof v === 'string' ? `"${v}"` : String(v));
  return `${[header.join(','), ...rows.map((row) => header.map((h) => cell(row[h])).join(','))].join('\n')}\n`;
}

describe('local automation: events → debounced retraining runs', () => {
  it('lands data, coalesces a flood of events into one run, records the causes, and skips a run with nothing new', async () => {
    const dir = await tempDir('kiln-automation-');
    const platform = await LocalPlatform.open({ home: join(dir, 'home') });
    // The loop `kiln up` runs: registration records how the model is trained.
    await platform.ingest([join(REPO_ROOT, 'examples', 'data', 'churn.csv')], 'churn');
    await platform.etl('churn');
    await platform.train({ dataset: 'churn', target: 'churn' });
    await platform.bus.drain();
    expect(await readTrainingConfig(platform.store, 'churn')).toMatchObject({
      dataset: 'churn',
      target: 'churn',
      algorithm: 'gbdt',
      rollout: { mode: 'canary' },
      source: { version: 1 },
    });

    const automation = startLocalAutomation(platform, { windowMs: 3_600_000 });
    try {
      // Bad input first: a monitor run with no traffic is a clear report, not an error and not a trigger.
      const quiet = await runMonitor(platform.store, { model: 'churn' }, { events: platform.bus });
      expect(quiet.status).toBe('no-traffic');
      await automation.idle();
      expect(automation.triggers).toEqual([]);

      const file = join(dir, 'shifted.csv');
      await writeFile(file, csv(shiftedRows(1500, 42).rows));
      await platform.ingest([file], 'churn');
      await automation.idle();
      expect(automation.etlRuns).toMatchObject([
        { dataset: 'churn', status: 'succeeded', result: { created: true } },
      ]);

      // A flood of drift events while the window is open: no storm.
      await platform.bus.publish(Array.from({ length: 40 }, (_, i) => drift(i)));
      await automation.idle();
      expect(automation.sfn.list()).toHaveLength(1);
      expect(automation.sfn.list()[0]?.status).toBe('waiting');
      const starts = automation.triggers.flatMap((t) => t.runs.map((run) => run.start));
      expect(starts.filter((start) => start === 'started')).toHaveLength(1);
      expect(starts.filter((start) => start === 'joined')).toHaveLength(40);

      await automation.flush();
      expect(automation.errors).toEqual([]);
      const [run] = await listRetrainingRuns(platform.store, 'churn');
      expect(run).toMatchObject({ status: 'trained', model: 'churn', etl: { created: false } });
      expect(run?.causes).toHaveLength(41);
      expect(run?.causes[0]).toMatchObject({ cause: 'data', detailType: 'EtlRunSucceeded' });
      expect(new Set(run?.causes.slice(1).map((cause) => cause.detailType))).toEqual(
        new Set(['DriftDetected']),
      );
      const events = await platform.store.list(triggerKeys.events('churn', run?.windowId ?? ''));
      expect(events).toHaveLength(41);
      // The gate passed: with a canary rollout the winner becomes the challenger, not the champion.
      const version = run?.registration?.version as number;
      expect(version).toBe(2);
      const record = await platform.registry.getVersion('churn', version);
      expect(record.lineage.datasetVersion).toBe(run?.datasetVersion);
      const aliases = (await platform.registry.readAliases('churn')).aliases;
      expect(aliases.champion).toBe(1);
      expect(run?.gate).toMatchObject({ passed: true, championVersion: 1 });
      expect(run?.registration).toMatchObject({ promoted: false, rollout: 'canary' });
      expect(aliases.challenger).toBe(2);
      // No local server to canary on: the challenger waits, and the record says why.
      const [rollout] = await listDeploymentRecords(platform.store, 'churn');
      expect(rollout).toMatchObject({ challenger: 2, status: 'not-started' });
      expect(rollout?.reasons[0]).toMatch(/does not serve churn/);

      // After the window: new events open a new window and a new run, which finds nothing new to learn.
      await platform.bus.publish([drift(100), drift(101)]);
      await automation.flush();
      const runs = await listRetrainingRuns(platform.store, 'churn');
      expect(runs).toHaveLength(2);
      const second = runs.find((r) => r.runId !== run?.runId);
      expect(second).toMatchObject({ status: 'skipped' });
      expect(second?.reason).toMatch(/^nothing new to learn from: churn@2 was already trained on churn@/);
      expect(second?.causes).toHaveLength(2);
      expect((await platform.registry.listVersions('churn')).length).toBe(2);
    } finally {
      await automation.stop();
      await platform.bus.drain();
    }
  });
});
