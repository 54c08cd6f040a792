import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runKiln } from '../support/cli.ts';
import { tempDir } from '../support/temp.ts';

interface DrillJson {
  events: Array<{ detailType: string; summary: string }>;
  drift: { status: string; driftedFeatures: string[]; requests: number; htmlKey: string };
  runs: Array<{ runId: string; status: string; causes: string[]; version: number | null }>;
  gate: { passed: boolean; championVersion: number | null } | null;
  canary: {
    status: string;
    mode: string | null;
    champion: number | null;
    challenger: number | null;
    checks: Array<{ name: string; status: string }>;
  };
  champion: number;
}

describe('kiln demo drift (the drill, end to end through the real CLI)', () => {
  it('lands shifted data, detects drift, retrains once for all the events, gates and settles a canary', async () => {
    const home = join(await tempDir(), 'home');
    const result = await runKiln(['demo', 'drift', '--json', '--home', home]);
    expect(result.code, result.stderr).toBe(0);
    const drill = JSON.parse(result.stdout) as DrillJson;

    expect(drill.drift.status).toBe('drift');
    expect(drill.drift.driftedFeatures).toEqual(
      expect.arrayContaining(['total_day_minutes', 'international_plan']),
    );
    expect(drill.drift.htmlKey).toMatch(/^monitoring\/churn\/1\/drift\/.+\.html$/);

    // The new data and the drift alarm arrived in one window: one run, caused by both.
    expect(drill.runs).toHaveLength(1);
    expect(drill.runs[0]).toMatchObject({ status: 'trained', version: 2 });
    expect(drill.runs[0]?.causes).toEqual(expect.arrayContaining(['EtlRunSucceeded', 'DriftDetected']));
    expect(drill.gate).toMatchObject({ passed: true, championVersion: 1 });

    // The gate's winner went on a canary on the live server, which decided with every check.
    expect(drill.canary).toMatchObject({ mode: 'canary', champion: 1, challenger: 2 });
    expect(drill.canary.checks.map((check) => check.name)).toEqual([
      'traffic',
      'errors',
      'latency',
      'prediction-drift',
      'quality',
    ]);
    expect(['promoted', 'rolled-back']).toContain(drill.canary.status);
    expect(drill.champion).toBe(drill.canary.status === 'promoted' ? 2 : 1);

    const order = [
      'Object Created',
      'EtlRunSucceeded',
      'DriftDetected',
      'ModelVersionRegistered',
      'RolloutStarted',
      'RetrainingRunCompleted',
      'LabelsIngested',
      'RolloutCompleted',
    ];
    const types = drill.events.map((event) => event.detailType);
    const positions = order.map((type) => types.lastIndexOf(type));
    expect(
      positions.every((position) => position >= 0),
      types.join(', '),
    ).toBe(true);
    expect(types.indexOf('DriftDetected')).toBeLessThan(types.indexOf('RolloutStarted'));
    expect(types.lastIndexOf('RolloutStarted')).toBeLessThan(types.lastIndexOf('RolloutCompleted'));
    // The timeline is printed as it happens (stderr), JSON on stdout.
    for (const step of ['land', 'traffic', 'monitor', 'window', 'retrain', 'gate', 'canary', 'decision']) {
      expect(result.stderr).toMatch(new RegExp(`s  ${step} `));
    }
  });
});
