import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { KilnEvent } from '../../lib/core/events.ts';
import { LocalEventBus } from '../../lib/local/event-bus.ts';
import { ingestLabels } from '../../lib/monitoring/labels.ts';
import { RegistryModelSource } from '../../lib/registry/model-source.ts';
import { ModelRegistry } from '../../lib/registry/registry.ts';
import { FileSystemStore } from '../../lib/store/fs-store.ts';
import { type LocalRolloutOptions, startLocalRollout } from '../../lib/updates/local-rollout.ts';
import { postJson, type RunningServer, startServer } from '../support/model-fixtures.ts';
import { tempDir } from '../support/temp.ts';
import {
  type ChurnVersionOptions,
  features,
  labelledRows,
  passedGate,
  registerChampion,
  registerChurn,
} from '../unit/updates-fixtures.ts';

/**
 * Canary and shadow rollouts on the real server: real models in a real registry, real HTTP, real capture,
 * late labels ingested through the monitoring code. Every challenger here passed a (recorded) gate, so the
 * policy allows it: live traffic alone decides.
 */

interface Setup {
  dir: string;
  store: FileSystemStore;
  registry: ModelRegistry;
  bus: LocalEventBus;
  events: KilnEvent[];
  server: RunningServer;
}

async function setup(challenger: ChurnVersionOptions): Promise<Setup> {
  const dir = await tempDir('kiln-canary-');
  const store = new FileSystemStore(join(dir, 'lake'));
  const bus = new LocalEventBus();
  const events: KilnEvent[] = [];
  bus.subscribe({}, (event) => {
    events.push(event);
  });
  const registry = new ModelRegistry(store, bus);
  await registerChampion(registry);
  await registerChurn(registry, { gate: passedGate(1), ...challenger });
  await registry.setAlias('churn', 'challenger', 2, 'updates-test', 'passed the gate');
  const server = await startServer({
    source: new RegistryModelSource(registry),
    capture: { store, flushIntervalMs: 0 },
  });
  return { dir, store, registry, bus, events, server };
}

/** Late labels for the requests sent so far, ingested before the decision (as the drill does). */
function labelsOf(s: Setup, truth: Array<[string, unknown]>): LocalRolloutOptions['beforeDecision'] {
  return async (bake) => {
    const file = join(s.dir, `labels-${bake.challenger}.csv`);
    await writeFile(
      file,
      `requestId,label\n${truth.map(([id, label]) => `${id},${String(label)}`).join('\n')}\n`,
    );
    await ingestLabels(s.store, 'churn', file, { capturesSince: bake.since });
  };
}

/** One-row requests until the router has baked; returns (request id, true label, answering version). */
async function sendUntilBaked(s: Setup, baked: Promise<void>, rows = labelledRows(3000, 7, { shift: 1 })) {
  let done = false;
  void baked.then(() => {
    done = true;
  });
  const sent: Array<{ id: string; label: unknown; version: string | null }> = [];
  for (let i = 0; i < rows.length && !done; i += 4) {
    await Promise.all(
      rows.slice(i, i + 4).map(async (row) => {
        const reply = await postJson(`${s.server.url}/invocations`, { instances: features([row]) });
        expect(reply.status).toBe(200);
        sent.push({
          id: reply.headers.get('x-kiln-request-id') ?? '',
          label: row.churned,
          version: reply.headers.get('x-kiln-model-version'),
        });
      }),
    );
  }
  return sent;
}

describe('canary on the local server', () => {
  it('promotes a better challenger: a share of traffic, both captured, every check passed', async () => {
    // Trained on traffic like the live traffic (shifted), the challenger predicts it better.
    const s = await setup({ trainRows: labelledRows(2000, 11, { shift: 1 }) });
    try {
      const truth: Array<[string, unknown]> = [];
      const rollout = await startLocalRollout(
        { store: s.store, registry: s.registry, server: s.server.inference, events: s.bus },
        'churn',
        2,
        {
          settings: { mode: 'canary', share: 0.25, bakeRequests: 60 },
          // Latency is compared, but a test must not depend on timing: only a gross slowdown would fail it.
          criteria: { latencySlackMs: 1000 },
          beforeDecision: labelsOf(s, truth),
        },
      );
      expect(rollout.router?.mode).toBe('canary');
      const sent = await sendUntilBaked(s, rollout.router?.baked ?? Promise.resolve());
      truth.push(...sent.map((r): [string, unknown] => [r.id, r.label]));
      const outcome = await rollout.done;
      // Deterministic split: exactly a quarter of the requests went to the challenger.
      const byVersion = (v: string) => sent.filter((r) => r.version === v).length;
      expect(byVersion('2')).toBe(60);
      expect(byVersion('1')).toBe(180);
      expect(outcome.status, JSON.stringify(outcome.decision?.checks)).toBe('promoted');
      expect(outcome.decision?.checks.map((check) => [check.name, check.status])).toEqual([
        ['traffic', 'pass'],
        ['errors', 'pass'],
        ['latency', 'pass'],
        ['prediction-drift', 'pass'],
        ['quality', 'pass'],
      ]);
      expect((await s.registry.readAliases('churn')).aliases.champion).toBe(2);
      // The server follows: new requests are answered by the new champion.
      const after = await postJson(`${s.server.url}/invocations`, {
        instances: features(labelledRows(1, 5)),
      });
      expect(after.headers.get('x-kiln-model-version')).toBe('2');
      // Both versions' traffic is in the capture zone under its own version.
      expect((await s.store.list('capture/churn/1/')).length).toBeGreaterThan(0);
      expect((await s.store.list('capture/churn/2/')).length).toBeGreaterThan(0);
      await s.bus.drain();
      expect(s.events.filter((e) => e.source === 'kiln.updates').map((e) => e.detailType)).toEqual([
        'RolloutStarted',
        'RolloutCompleted',
      ]);
      const record = JSON.parse((await s.store.get(outcome.recordKey)).toString()) as Record<string, unknown>;
      expect(record).toMatchObject({
        status: 'promoted',
        host: 'local',
        mode: 'canary',
        champion: 1,
        challenger: 2,
      });
    } finally {
      await s.server.close();
    }
  });

  it('rolls back a worse challenger: worse on late labels, archived, the champion keeps serving', async () => {
    // A model that learnt nothing (shuffled labels) but carries a passed gate, as a bad offline result would.
    const s = await setup({ shuffleLabels: true });
    try {
      const truth: Array<[string, unknown]> = [];
      const rollout = await startLocalRollout(
        { store: s.store, registry: s.registry, server: s.server.inference, events: s.bus },
        'churn',
        2,
        {
          settings: { mode: 'canary', share: 0.25, bakeRequests: 60 },
          beforeDecision: labelsOf(s, truth),
        },
      );
      const sent = await sendUntilBaked(s, rollout.router?.baked ?? Promise.resolve(), labelledRows(3000, 8));
      truth.push(...sent.map((r): [string, unknown] => [r.id, r.label]));
      const outcome = await rollout.done;
      expect(outcome.status).toBe('rolled-back');
      expect(outcome.reasons.some((reason) => reason.startsWith('quality: accuracy'))).toBe(true);
      expect((await s.registry.readAliases('churn')).aliases).toEqual({ champion: 1 });
      expect((await s.registry.getVersion('churn', 2)).stage).toBe('archived');
      const after = await postJson(`${s.server.url}/invocations`, {
        instances: features(labelledRows(1, 5)),
      });
      expect(after.headers.get('x-kiln-model-version')).toBe('1');
    } finally {
      await s.server.close();
    }
  });

  it('shadow mode serves the champion, mirrors every request to the challenger and compares', async () => {
    const s = await setup({ trainRows: labelledRows(2000, 11, { shift: 1 }) });
    try {
      const rollout = await startLocalRollout(
        { store: s.store, registry: s.registry, server: s.server.inference, events: s.bus },
        'churn',
        2,
        {
          settings: { mode: 'shadow', share: 1, bakeRequests: 50 },
        },
      );
      const sent = await sendUntilBaked(s, rollout.router?.baked ?? Promise.resolve());
      const outcome = await rollout.done;
      // Every answer came from the champion…
      expect(new Set(sent.map((r) => r.version))).toEqual(new Set(['1']));
      // …and the challenger saw the same requests: its captures carry the champion's request ids.
      const shadowIds = new Set<string>();
      for (const info of await s.store.list('capture/churn/2/')) {
        for (const line of (await s.store.get(info.key)).toString().trim().split('\n')) {
          shadowIds.add((JSON.parse(line) as { requestId: string }).requestId);
        }
      }
      expect(shadowIds.size).toBeGreaterThanOrEqual(50);
      expect([...shadowIds].every((id) => sent.some((r) => r.id === id))).toBe(true);
      const traffic = (outcome.evaluation?.traffic ?? {}) as {
        agreement?: { compared: number; agreed: number };
      };
      expect(traffic.agreement?.compared).toBeGreaterThanOrEqual(50);
      expect(outcome.mode).toBe('shadow');
      expect(['promoted', 'rolled-back']).toContain(outcome.status);
      expect(outcome.decision?.checks.find((check) => check.name === 'traffic')?.status).toBe('pass');
    } finally {
      await s.server.close();
    }
  });

  it('refuses to start a rollout the policy would not allow, and records why', async () => {
    const s = await setup({ gate: { ...passedGate(1), passed: false, reason: 'champion stays' } });
    try {
      const rollout = await startLocalRollout(
        { store: s.store, registry: s.registry, server: s.server.inference },
        'churn',
        2,
      );
      expect(rollout.router).toBeUndefined();
      const outcome = await rollout.done;
      expect(outcome.status).toBe('not-started');
      expect(outcome.reasons[0]).toMatch(/^the promotion policy \(revision 0\) does not allow it/);
      const reply = await postJson(`${s.server.url}/invocations`, {
        instances: features(labelledRows(1, 5)),
      });
      expect(reply.headers.get('x-kiln-model-version')).toBe('1');
    } finally {
      await s.server.close();
    }
  });

  it('rolls back an undecided canary when the bake time runs out without enough traffic', async () => {
    const s = await setup({});
    try {
      const rollout = await startLocalRollout(
        { store: s.store, registry: s.registry, server: s.server.inference },
        'churn',
        2,
        {
          settings: { mode: 'canary', share: 0.5, bakeRequests: 1000 },
        },
      );
      for (const row of labelledRows(6, 3)) {
        await postJson(`${s.server.url}/invocations`, { instances: features([row]) });
      }
      rollout.stop();
      const outcome = await rollout.done;
      expect(outcome.status).toBe('rolled-back');
      expect(outcome.reasons[0]).toMatch(
        /^traffic: challenger v2 answered 3 request\(s\), champion v1 3; inconclusive/,
      );
    } finally {
      await s.server.close();
    }
  });
});
