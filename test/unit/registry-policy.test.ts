import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tar from 'tar';
import { describe, expect, it } from 'vitest';
import { ConflictError, ValidationError } from '../../lib/core/errors.ts';
import {
  defaultPolicy,
  evaluatePromotion,
  type PolicyDocument,
  PolicyDocumentSchema,
  PolicySpecSchema,
} from '../../lib/registry/policy.ts';
import type { VersionRecord } from '../../lib/registry/records.ts';
import { FileSystemStore } from '../../lib/store/fs-store.ts';
import { lakeUri } from '../../lib/store/lake-uri.ts';
import { registerTraining } from '../../lib/training/steps.ts';
import { gate, registration, registryWithEvents } from '../support/registry-fixtures.ts';
import { tempDir } from '../support/temp.ts';

function policy(spec: unknown, revision = 1): PolicyDocument {
  return PolicyDocumentSchema.parse({
    kind: 'kiln.registry-policy',
    revision,
    updatedAt: '2026-01-01T00:00:00Z',
    updatedBy: 'platform-team',
    reason: 'test',
    ...PolicySpecSchema.parse(spec),
  });
}

function version(overrides: Partial<VersionRecord> = {}): VersionRecord {
  return {
    kind: 'kiln.model-version',
    model: 'churn',
    version: 2,
    stage: 'candidate',
    createdAt: '2026-01-01T00:00:00Z',
    task: 'binary',
    classes: ['no', 'yes'],
    target: 'churn',
    inputs: [],
    metrics: { accuracy: 0.91, roc_auc: 0.95 },
    artifacts: {},
    lineage: {} as VersionRecord['lineage'],
    approvals: [],
    history: [
      {
        from: null,
        to: 'candidate',
        by: 'training-pipeline',
        at: '2026-01-01T00:00:00Z',
        reason: 'registered',
      },
    ],
    ...overrides,
  };
}

const approval = (by: string) => ({ by, at: '2026-01-02T00:00:00Z', reason: 'ok' });

describe('evaluatePromotion', () => {
  it('default policy: a person approved, or the gate passed against the current champion', () => {
    const rules = defaultPolicy();
    expect(evaluatePromotion(rules, version({ gate: gate(true, 1, 0.01) }), 1).allowed).toBe(true);
    expect(evaluatePromotion(rules, version({ approvals: [approval('alice')] }), 1).allowed).toBe(true);
    const neither = evaluatePromotion(rules, version({ gate: gate(false, 1, -0.01) }), 1);
    expect(neither.allowed).toBe(false);
    expect(neither.violations.join()).toMatch(/approval: needs 1.*gate: did not pass/);
    // First version: nothing to beat.
    expect(
      evaluatePromotion(rules, version({ version: 1, gate: gate(true, null, null) }), null).allowed,
    ).toBe(true);
  });

  it('a gate measured against another champion is stale', () => {
    const decision = evaluatePromotion(defaultPolicy(), version({ gate: gate(true, 1, 0.05) }), 3);
    expect(decision.allowed).toBe(false);
    expect(decision.violations.join()).toContain('compared against champion 1, but the champion is now 3');
    const noChampionThen = evaluatePromotion(defaultPolicy(), version({ gate: gate(true, null, null) }), 1);
    expect(noChampionThen.allowed).toBe(false);
  });

  it('"beats champion by ≥ X": the margin, the metric and first versions are enforced', () => {
    const strict = policy({
      default: { production: { anyOf: [{ rule: 'gate', minImprovement: 0.02, metric: 'roc_auc' }] } },
    });
    expect(evaluatePromotion(strict, version({ gate: gate(true, 1, 0.03) }), 1).allowed).toBe(true);
    const small = evaluatePromotion(strict, version({ gate: gate(true, 1, 0.01) }), 1);
    expect(small.violations.join()).toContain('does not beat champion 1 by 0.01 (needs ≥ 0.02 and > 0)');
    const otherMetric = evaluatePromotion(
      strict,
      version({ gate: { ...gate(true, 1, 0.5), metric: 'accuracy' } }),
      1,
    );
    expect(otherMetric.violations.join()).toContain('measured accuracy, the policy compares roc_auc');
    const noFirst = policy({
      default: { production: { anyOf: [{ rule: 'gate', allowFirstVersion: false }] } },
    });
    expect(evaluatePromotion(noFirst, version({ gate: gate(true, null, null) }), null).allowed).toBe(false);
    expect(evaluatePromotion(strict, version({}), 1).violations.join()).toContain(
      'no evaluation gate result',
    );
  });

  it('approval rules: approver patterns, several approvers, never the registrant', () => {
    const twoReviewers = policy({
      default: {
        approvers: ['*@example.com'],
        production: { anyOf: [{ rule: 'approval', minApprovals: 2 }] },
      },
    });
    const one = version({ approvals: [approval('ann@example.com'), approval('mallory@evil.test')] });
    expect(evaluatePromotion(twoReviewers, one, 1).violations.join()).toContain('needs 2 approval(s)');
    const two = version({ approvals: [approval('ann@example.com'), approval('bo@example.com')] });
    expect(evaluatePromotion(twoReviewers, two, 1)).toMatchObject({
      allowed: true,
      satisfied: ['approved by ann@example.com, bo@example.com'],
    });
    const self = version({
      approvals: [approval('training-pipeline')],
      history: [{ from: null, to: 'candidate', by: 'training-pipeline', at: '', reason: '' }],
    });
    expect(evaluatePromotion(defaultPolicy(), self, 1).allowed).toBe(false);
  });

  it('allOf floors hold on every path; per-model rules override the default', () => {
    const rules = policy({
      default: {
        production: {
          allOf: [{ rule: 'metric', metric: 'accuracy', min: 0.95 }],
          anyOf: [{ rule: 'approval' }],
        },
      },
      models: { fraud: { production: { allOf: [], anyOf: [{ rule: 'gate' }] } } },
    });
    const approved = version({ approvals: [approval('alice')] });
    const floor = evaluatePromotion(rules, approved, 1);
    expect(floor.allowed).toBe(false);
    expect(floor.violations).toEqual(['metric: accuracy = 0.91 (needs ≥ 0.95)']);
    expect(evaluatePromotion(rules, { ...approved, model: 'fraud' }, 1).allowed).toBe(false);
    expect(evaluatePromotion(rules, version({ model: 'fraud', gate: gate(true, 1, 0.1) }), 1).allowed).toBe(
      true,
    );
  });

  it('rejects malformed policies with the path of each problem', () => {
    const result = PolicySpecSchema.safeParse({
      default: { production: { anyOf: [{ rule: 'gate', minImprovement: -1 }, { rule: 'vibes' }] } },
      models: { 'Bad Name': {} },
    });
    expect(result.success).toBe(false);
    const paths = result.error?.issues.map((issue) => issue.path.join('.'));
    expect(paths).toEqual(
      expect.arrayContaining([
        'default.production.anyOf.0.minImprovement',
        'default.production.anyOf.1.rule',
      ]),
    );
    expect(
      PolicySpecSchema.safeParse({ default: { production: { allOf: [{ rule: 'metric', metric: 'auc' }] } } })
        .success,
    ).toBe(false);
  });
});

describe('PolicyStore (in the lake, compare-and-swap, with history)', () => {
  it('starts at the built-in default and keeps every revision', async () => {
    const { registry } = registryWithEvents(new FileSystemStore(await tempDir()));
    expect((await registry.policies.read()).revision).toBe(0);
    expect(await registry.policies.history()).toEqual([]);
    const first = await registry.policies.write(
      { default: { approvers: ['alice'] } },
      { actor: 'lead', reason: 'only alice' },
    );
    const second = await registry.policies.write(
      { ...first, default: { ...first.default, approvers: ['alice', 'bob'] } },
      { actor: 'lead', reason: 'and bob' },
    );
    expect([first.revision, second.revision]).toEqual([1, 2]);
    expect((await registry.policies.read()).default.approvers).toEqual(['alice', 'bob']);
    const history = await registry.policies.history();
    expect(history.map((doc) => [doc.revision, doc.updatedBy, doc.reason])).toEqual([
      [1, 'lead', 'only alice'],
      [2, 'lead', 'and bob'],
    ]);
  });

  it('refuses a stale edit and an invalid policy, changing nothing', async () => {
    const { registry } = registryWithEvents(new FileSystemStore(await tempDir()));
    const copy = await registry.policies.read(); // revision 0, as an editor would copy it
    await registry.policies.write({}, { actor: 'ann', reason: 'first' });
    await expect(registry.policies.write(copy, { actor: 'bo', reason: 'stale copy' })).rejects.toBeInstanceOf(
      ConflictError,
    );
    await expect(
      registry.policies.write({}, { actor: 'bo', reason: 'explicit', expectedRevision: 0 }),
    ).rejects.toThrow(/revision 1, not 0/);
    await expect(
      registry.policies.write(
        { default: { production: { anyOf: [{ rule: 'nope' }] } } },
        { actor: 'bo', reason: 'x' },
      ),
    ).rejects.toThrow(ValidationError);
    expect((await registry.policies.read()).revision).toBe(1);
    expect(await registry.policies.history()).toHaveLength(1);
  });

  it('loses no revision when editors race, and exactly one wins a guarded race', async () => {
    const { registry } = registryWithEvents(new FileSystemStore(await tempDir()));
    const writers = 8;
    const written = await Promise.all(
      Array.from({ length: writers }, (_, i) =>
        registry.policies.write(
          { default: { approvers: [`user-${i}`] } },
          { actor: `user-${i}`, reason: 'race' },
        ),
      ),
    );
    expect(written.map((doc) => doc.revision).sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect((await registry.policies.history()).map((doc) => doc.updatedBy).sort()).toEqual(
      written.map((doc) => doc.updatedBy).sort(),
    );
    const guarded = await Promise.allSettled(
      Array.from({ length: writers }, (_, i) =>
        registry.policies.write({}, { actor: `g-${i}`, reason: 'guarded', expectedRevision: 8 }),
      ),
    );
    expect(guarded.filter((outcome) => outcome.status === 'fulfilled')).toHaveLength(1);
    for (const outcome of guarded) {
      if (outcome.status === 'rejected') expect(outcome.reason).toBeInstanceOf(ConflictError);
    }
  });

  it('is enforced by the registry: approvers, and the gate margin', async () => {
    const { registry } = registryWithEvents(new FileSystemStore(await tempDir()));
    await registry.policies.write(
      { default: { approvers: ['alice'], production: { anyOf: [{ rule: 'gate', minImprovement: 0.05 }] } } },
      { actor: 'lead', reason: 'strict' },
    );
    await registry.register(registration('m', { gate: gate(true, null, null) }));
    await registry.promote('m', 1, 'training-pipeline', 'first');
    await registry.register(registration('m', { gate: gate(true, 1, 0.02) }));
    await expect(registry.approve('m', 2, 'bob', 'lgtm')).rejects.toThrow(/bob is not an approver of m/);
    await registry.approve('m', 2, 'alice', 'lgtm');
    await expect(registry.promote('m', 2, 'alice', 'ship')).rejects.toThrow(
      /policy revision 1: .*does not beat champion 1 by 0.02 \(needs ≥ 0.05/,
    );
    expect((await registry.readAliases('m')).aliases.champion).toBe(1);
    expect((await registry.checkPromotion('m', 2)).allowed).toBe(false);
  });
});

describe('training auto-promotion goes through the policy', () => {
  async function trainedJob(store: FileSystemStore, scratch: string, job: string) {
    const dir = join(scratch, job);
    await mkdir(dir, { recursive: true });
    const summary = {
      task: 'binary',
      classes: ['no', 'yes'],
      target: 'churn',
      inputs: [{ name: 'x', type: 'number' }],
      algorithm: 'gbdt',
      hyperparameters: { max_iter: 10 },
      seed: 0,
      transformHash: 'c'.repeat(64),
      codeVersion: 'kiln@test',
      startedAt: '2026-01-01T00:00:00Z',
      endedAt: '2026-01-01T00:01:00Z',
    };
    await writeFile(join(dir, 'model.onnx'), `onnx-${job}`);
    await writeFile(join(dir, 'transform.json'), '{}');
    await writeFile(join(dir, 'training.json'), JSON.stringify(summary));
    const archive = join(scratch, `${job}.tar.gz`);
    await tar.create({ gzip: true, file: archive, cwd: dir }, [
      'model.onnx',
      'transform.json',
      'training.json',
    ]);
    const key = `models-staging/${job}/output/model.tar.gz`;
    await store.putFile(key, archive);
    return lakeUri(store, key);
  }

  function input(job: string, modelArtifacts: string, evaluationGate: Record<string, unknown>) {
    return {
      job: {
        trainingJobName: job,
        model: 'churn',
        dataset: 'churn',
        datasetVersion: 'v1',
        target: 'churn',
        builtin: true,
        trainingImage: 'kiln-training:test',
        seed: 0,
        hyperparameters: {},
        gateMargin: 0,
        testDataKey: 'curated/churn/v1/test.parquet',
      },
      training: { modelArtifacts, trainingJobName: job },
      evaluation: { metrics: { roc_auc: 0.9 }, gate: evaluationGate },
    };
  }

  it('promotes the first model, and keeps a gate-passing model as challenger when the policy refuses', async () => {
    const scratch = await tempDir();
    const store = new FileSystemStore(join(scratch, 'lake'));
    const { registry, bus, events } = registryWithEvents(store);
    const first = await registerTraining(store, bus, {
      input: input('job-1', await trainedJob(store, scratch, 'job-1'), gate(true, null, null)),
      promote: true,
    });
    expect(first).toMatchObject({ version: 1, promoted: true, stage: 'production' });
    // The platform team now requires a person for production.
    await registry.policies.write(
      { default: { production: { anyOf: [{ rule: 'approval' }] } } },
      { actor: 'lead', reason: 'humans only' },
    );
    const second = await registerTraining(store, bus, {
      input: input('job-2', await trainedJob(store, scratch, 'job-2'), gate(true, 1, 0.05)),
      promote: true,
    });
    expect(second).toMatchObject({ version: 2, promoted: false, stage: 'candidate' });
    expect(second.promotion.detail.join()).toMatch(/refused by policy revision 1/);
    expect((await registry.readAliases('churn')).aliases).toEqual({ champion: 1, challenger: 2 });
    const audit = await registry.readAudit('churn');
    expect(audit.filter((entry) => entry.action === 'promotion-refused')).toMatchObject([
      { version: 2, actor: 'training-pipeline', policyRevision: 1 },
    ]);
    await bus.drain();
    expect(events.filter((event) => event.detailType === 'PromotionRefused')).toHaveLength(1);
    // A person approves; the same policy now lets it through.
    await registry.approve('churn', 2, 'alice', 'reviewed the evaluation');
    await expect(registry.promote('churn', 2, 'alice', 'approved')).resolves.toMatchObject({
      previousChampion: 1,
    });
  });
});
