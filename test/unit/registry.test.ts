import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import {
  ConflictError,
  IntegrityError,
  NotFoundError,
  PolicyError,
  ValidationError,
} from '../../lib/core/errors.ts';
import { RegistryEventSchema } from '../../lib/registry/events.ts';
import { parseModelReference, type RegisterRequest } from '../../lib/registry/registry.ts';
import { FileSystemStore } from '../../lib/store/fs-store.ts';
import { lake } from '../../lib/store/layout.ts';
import { gate, registration, registryWithEvents } from '../support/registry-fixtures.ts';
import { tempDir } from '../support/temp.ts';

async function setup() {
  const store = new FileSystemStore(await tempDir());
  return { store, ...registryWithEvents(store) };
}

describe('ModelRegistry', () => {
  it('numbers versions, records lineage with the artifact hash, and emits events', async () => {
    const { registry, bus, events } = await setup();
    const onnx = Buffer.from('model-bytes');
    const first = await registry.register(registration('churn', { onnx }));
    const second = await registry.register(registration('churn'));
    expect([first.version, second.version]).toEqual([1, 2]);
    expect(first.lineage.artifactSha256).toBe(createHash('sha256').update(onnx).digest('hex'));
    expect(first.stage).toBe('candidate');
    await bus.drain();
    const registered = events.filter((e) => e.detailType === 'ModelVersionRegistered');
    expect(registered.map((e) => e.detail.version)).toEqual([1, 2]);
    expect(registered[0]?.detail).toMatchObject({
      model: 'churn',
      actor: 'training-pipeline',
      artifactSha256: first.lineage.artifactSha256,
      datasetVersion: 'abc123',
    });
  });

  it('refuses a version without complete lineage and leaves the registry unchanged', async () => {
    const { registry, store } = await setup();
    const incomplete = registration('churn');
    (incomplete.lineage as Partial<RegisterRequest['lineage']>).datasetVersion = undefined;
    await expect(registry.register(incomplete)).rejects.toThrow(/lineage.*datasetVersion/);
    expect(await store.list('')).toEqual([]);
  });

  it('refuses an artifact whose hash does not match the lineage, writing nothing', async () => {
    const { registry, store } = await setup();
    const request = registration('churn');
    request.lineage.artifactSha256 = 'b'.repeat(64);
    await expect(registry.register(request)).rejects.toBeInstanceOf(IntegrityError);
    expect(await store.list('')).toEqual([]);
  });

  it('gives every concurrent writer its own version number', async () => {
    const { registry } = await setup();
    const records = await Promise.all(
      Array.from({ length: 12 }, () => registry.register(registration('race'))),
    );
    expect(records.map((r) => r.version).sort((a, b) => a - b)).toEqual(
      Array.from({ length: 12 }, (_, i) => i + 1),
    );
    expect((await registry.listVersions('race')).map((r) => r.version)).toHaveLength(12);
  });

  it('moves aliases with compare-and-swap and resolves NAME, NAME@N and NAME@ALIAS', async () => {
    const { registry } = await setup();
    await registry.register(registration('m'));
    await registry.register(registration('m'));
    expect((await registry.resolve('m')).version).toBe(2);
    await registry.approve('m', 1, 'alice', 'reviewed');
    await registry.promote('m', 1, 'alice', 'first');
    expect((await registry.resolve('m')).version).toBe(1);
    expect((await registry.resolve('m@2')).version).toBe(2);
    expect((await registry.resolve('m@champion')).version).toBe(1);
    await Promise.all([1, 2, 1, 2].map((v) => registry.setAlias('m', `a${v}`, v, 'test', 'race')));
    expect((await registry.readAliases('m')).aliases).toMatchObject({ champion: 1, a1: 1, a2: 2 });
    await registry.removeAlias('m', 'a2', 'test', 'done');
    expect((await registry.readAliases('m')).aliases).toEqual({ champion: 1, a1: 1 });
  });

  it('never lets champion move through a plain alias write', async () => {
    const { registry } = await setup();
    await registry.register(registration('m'));
    await expect(registry.setAlias('m', 'champion', 1, 'mallory', 'shortcut')).rejects.toBeInstanceOf(
      PolicyError,
    );
    await expect(registry.removeAlias('m', 'champion', 'mallory', 'shortcut')).rejects.toBeInstanceOf(
      PolicyError,
    );
    expect((await registry.readAliases('m')).aliases).toEqual({});
  });

  it('detects a tampered artifact when it is read, verified or promoted', async () => {
    const { registry, store, bus, events } = await setup();
    const record = await registry.register(registration('t', { gate: gate(true, null, null) }));
    await writeFile(store.pathOf(record.artifacts['model.onnx']?.key ?? ''), 'tampered');
    await expect(registry.readArtifact(record, 'model.onnx')).rejects.toBeInstanceOf(IntegrityError);
    await expect(registry.verifyArtifacts(record)).rejects.toThrow(
      /model\.onnx was modified after registration/,
    );
    await expect(registry.promote('t', 1, 'alice', 'ship it')).rejects.toBeInstanceOf(IntegrityError);
    expect((await registry.getVersion('t', 1)).stage).toBe('candidate');
    expect((await registry.readAliases('t')).aliases).toEqual({});
    await bus.drain();
    expect(events.filter((e) => e.detailType === 'PromotionRefused')).toHaveLength(1);
    const refused = (await registry.readAudit('t')).filter((entry) => entry.action === 'promotion-refused');
    expect(refused).toHaveLength(1);
  });

  it('rejects unknown models, bad references, and aliases to archived or deleted versions', async () => {
    const { registry, store } = await setup();
    await expect(registry.resolve('nope')).rejects.toBeInstanceOf(NotFoundError);
    expect(() => parseModelReference('Bad Name')).toThrow(ValidationError);
    expect(() => parseModelReference('m@1@2')).toThrow(ValidationError);
    expect(() => parseModelReference('m@Champion')).toThrow(ValidationError);
    await registry.register(registration('a'));
    await registry.register(registration('a'));
    await expect(registry.resolve('a@9')).rejects.toBeInstanceOf(NotFoundError);
    await expect(registry.getVersion('a', 0)).rejects.toBeInstanceOf(ValidationError);
    await registry.setAlias('a', 'shadow', 1, 'test', 'try it');
    await registry.archive('a', 1, 'test', 'old');
    // Archiving detached the alias; pointing a new one at the archived version is refused.
    expect((await registry.readAliases('a')).aliases).toEqual({});
    await expect(registry.setAlias('a', 'shadow', 1, 'test', 'x')).rejects.toThrow(/archived/);
    // An alias whose version record disappeared out of band resolves to a clear 404.
    await registry.setAlias('a', 'beta', 2, 'test', 'try it');
    await store.delete(lake.registryVersion('a', 2));
    await expect(registry.resolve('a@beta')).rejects.toThrow(/points at version 2, which does not exist/);
  });

  it('keeps create-only artifacts immutable', async () => {
    const { registry, store } = await setup();
    const record = await registry.register(registration('i'));
    await expect(
      store.put(record.artifacts['model.onnx']?.key ?? '', Buffer.from('x'), { ifNoneMatch: '*' }),
    ).rejects.toBeInstanceOf(ConflictError);
  });
});

describe('version lifecycle', () => {
  it('approve → promote → promote → rollback, with history, audit and one schema for every event', async () => {
    const { registry, bus, events } = await setup();
    await registry.register(registration('churn', { gate: gate(true, null, null) }));
    await registry.register(registration('churn', { gate: gate(true, 1, 0.02) }));

    const first = await registry.promote('churn', 1, 'training-pipeline', 'gate passed');
    expect(first.previousChampion).toBeNull();
    expect(first.record.stage).toBe('production');
    const second = await registry.promote('churn', 2, 'training-pipeline', 'gate passed');
    expect(second.previousChampion).toBe(1);
    expect((await registry.readAliases('churn')).aliases.champion).toBe(2);
    // The replaced champion stays in production: it is the rollback target.
    expect((await registry.getVersion('churn', 1)).stage).toBe('production');

    const rolled = await registry.rollback('churn', {
      actor: 'oncall',
      reason: 'latency regression',
      from: 2,
    });
    expect([rolled.from, rolled.to]).toEqual([2, 1]);
    expect((await registry.readAliases('churn')).aliases.champion).toBe(1);
    const archived = await registry.getVersion('churn', 2);
    expect(archived.stage).toBe('archived');
    expect(archived.history.at(-1)).toMatchObject({ from: 'production', to: 'archived', by: 'oncall' });
    expect(archived.history.at(-1)?.reason).toContain('latency regression');
    // Rolling back "from 2" again is refused: 2 is no longer the champion.
    await expect(
      registry.rollback('churn', { actor: 'oncall', reason: 'again', from: 2 }),
    ).rejects.toBeInstanceOf(ConflictError);
    // Nothing earlier than 1 was in production.
    await expect(registry.rollback('churn', { actor: 'oncall', reason: 'again' })).rejects.toThrow(
      /no earlier production version/,
    );

    const audit = await registry.readAudit('churn');
    expect(audit.map((entry) => entry.action)).toEqual([
      'register',
      'register',
      'promote',
      'promote',
      'rollback',
    ]);
    for (const entry of audit) {
      expect(entry.actor).toBeTruthy();
      expect(entry.at).toMatch(/^\d{4}-\d\d-\d\dT/);
      expect(entry.reason).toBeTruthy();
    }
    await bus.drain();
    for (const event of events)
      expect(RegistryEventSchema.safeParse(event).success, event.detailType).toBe(true);
    expect(events.map((e) => e.detailType)).toEqual([
      'ModelVersionRegistered',
      'ModelVersionRegistered',
      'ModelVersionStageChanged',
      'AliasMoved',
      'ModelVersionStageChanged',
      'AliasMoved',
      'AliasMoved',
      'ModelVersionStageChanged',
    ]);
    const moves = events
      .filter((e) => e.detailType === 'AliasMoved')
      .map((e) => [e.detail.previous, e.detail.version]);
    expect(moves).toEqual([
      [null, 1],
      [1, 2],
      [2, 1],
    ]);
  });

  it('rolls back to the version that was champion before, even when it was promoted again', async () => {
    const { registry } = await setup();
    for (let v = 1; v <= 3; v++) {
      await registry.register(registration('m', { actor: 'bob' }));
      await registry.approve('m', v, 'alice', 'reviewed');
    }
    await registry.promote('m', 1, 'alice', 'v1');
    await registry.promote('m', 2, 'alice', 'v2');
    await registry.promote('m', 1, 'alice', 'v2 was worse, v1 again');
    await registry.promote('m', 3, 'alice', 'v3');
    const rolled = await registry.rollback('m', { actor: 'alice', reason: 'v3 broken' });
    expect(rolled.to).toBe(1);
    await expect(
      registry.rollback('m', { actor: 'alice', reason: 'to an archived one', to: 3 }),
    ).rejects.toThrow(/archived: rollback only goes back to a version in production/);
    const explicit = await registry.rollback('m', { actor: 'alice', reason: 'explicit', to: 2 });
    expect([explicit.from, explicit.to]).toEqual([1, 2]);
  });

  it('approval: counts each person once, refuses self-approval, refuses final stages', async () => {
    const { registry, bus, events } = await setup();
    await registry.register(registration('m', { actor: 'bob' }));
    await expect(registry.approve('m', 1, 'bob', 'my own')).rejects.toBeInstanceOf(PolicyError);
    const approved = await registry.approve('m', 1, 'alice', 'looks right');
    expect(approved.stage).toBe('approved');
    await expect(registry.approve('m', 1, 'alice', 'again')).rejects.toBeInstanceOf(ConflictError);
    const twice = await registry.approve('m', 1, 'carol', 'second pair of eyes');
    expect(twice.approvals?.map((a) => a.by)).toEqual(['alice', 'carol']);
    expect(twice.history.map((h) => h.to)).toEqual(['candidate', 'approved']);
    await registry.reject('m', 1, 'dave', 'data leak found');
    await expect(registry.approve('m', 1, 'erin', 'late')).rejects.toThrow(/rejected/);
    await expect(registry.promote('m', 1, 'erin', 'anyway')).rejects.toBeInstanceOf(PolicyError);
    await expect(registry.approve('m', 1, '', 'nobody')).rejects.toBeInstanceOf(ValidationError);
    await expect(registry.approve('m', 1, 'erin', '   ')).rejects.toBeInstanceOf(ValidationError);
    await bus.drain();
    expect(
      events.filter((e) => e.detailType === 'ModelVersionApproved').map((e) => e.detail.approvals),
    ).toEqual([1, 2]);
    expect(events.filter((e) => e.detailType === 'ModelVersionRejected')).toHaveLength(1);
    const actions = (await registry.readAudit('m')).map((entry) => entry.action);
    expect(actions).toEqual([
      'register',
      'approval-refused',
      'approve',
      'approve',
      'reject',
      'promotion-refused',
    ]);
  });

  it('refuses to archive or reject the champion, and to promote without a passing rule', async () => {
    const { registry, bus, events } = await setup();
    await registry.register(registration('m', { gate: gate(true, null, null) }));
    await registry.register(registration('m', { gate: gate(false, 1, -0.01) }));
    await registry.promote('m', 1, 'training-pipeline', 'first');
    await expect(registry.archive('m', 1, 'alice', 'cleanup')).rejects.toThrow(/is the champion/);
    await expect(registry.reject('m', 1, 'alice', 'no')).rejects.toThrow(/is the champion/);
    const before = await registry.getVersion('m', 2);
    await expect(registry.promote('m', 2, 'training-pipeline', 'try')).rejects.toThrow(
      /refused by policy revision 0: none of the promotion paths holds: approval: needs 1 approval.*gate: did not pass/,
    );
    expect(await registry.getVersion('m', 2)).toEqual(before);
    expect((await registry.readAliases('m')).aliases).toEqual({ champion: 1 });
    await bus.drain();
    const refused = events.find((e) => e.detailType === 'PromotionRefused');
    expect(refused?.detail).toMatchObject({
      model: 'm',
      version: 2,
      policyRevision: 0,
      actor: 'training-pipeline',
    });
  });

  it('two challengers gated against the same champion: exactly one is promoted, the other refused as stale', async () => {
    const { registry, bus, events } = await setup();
    await registry.register(registration('m', { gate: gate(true, null, null) }));
    await registry.promote('m', 1, 'training-pipeline', 'first');
    await registry.register(registration('m', { gate: gate(true, 1, 0.02) }));
    await registry.register(registration('m', { gate: gate(true, 1, 0.03) }));
    const outcomes = await Promise.allSettled([
      registry.promote('m', 2, 'training-pipeline', 'gate passed'),
      registry.promote('m', 3, 'training-pipeline', 'gate passed'),
    ]);
    const won = outcomes.flatMap((outcome, i) => (outcome.status === 'fulfilled' ? [i + 2] : []));
    expect(won).toHaveLength(1);
    const lost = outcomes.find((outcome) => outcome.status === 'rejected');
    expect(lost?.status === 'rejected' && lost.reason).toBeInstanceOf(PolicyError);
    expect(String(lost?.status === 'rejected' && lost.reason.message)).toContain(
      `compared against champion 1, but the champion is now ${won[0]}`,
    );
    const aliases = await registry.readAliases('m');
    expect(aliases.aliases.champion).toBe(won[0]);
    expect(aliases.championHistory).toEqual([1, won[0]]);
    const loser = won[0] === 2 ? 3 : 2;
    expect((await registry.getVersion('m', loser)).stage).toBe('candidate');
    await bus.drain();
    expect(events.filter((e) => e.detailType === 'PromotionRefused').map((e) => e.detail.version)).toEqual([
      loser,
    ]);
  });
});
