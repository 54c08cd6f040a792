import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { KilnEvent } from '../../lib/core/events.ts';
import { LocalEventBus } from '../../lib/local/event-bus.ts';
import { ModelRegistry, sha256Hex } from '../../lib/registry/registry.ts';
import { FileSystemStore } from '../../lib/store/fs-store.ts';
import type { ObjectStore } from '../../lib/store/object-store.ts';
import { S3Store } from '../../lib/store/s3-store.ts';
import { registration } from '../support/registry-fixtures.ts';
import { useS3rver } from '../support/s3rver.ts';

interface Move {
  previous: number | null;
  version: number;
}

/** Follows previous → version links from `null`; a lost update shows up as a fork or a gap. */
function chainOf(moves: Move[]): number[] {
  const next = new Map<number | null, number>();
  for (const move of moves) {
    expect(next.has(move.previous), `two moves started from ${move.previous}: one overwrote the other`).toBe(
      false,
    );
    next.set(move.previous, move.version);
  }
  const chain: number[] = [];
  for (let at = next.get(null); at !== undefined; at = next.get(at)) chain.push(at);
  return chain;
}

/**
 * Many writers, one model: each registers versions, points its own alias and a shared alias at them,
 * approves a shared version, has its versions approved and promoted. Afterwards nothing may be missing.
 */
function describeRace(
  name: string,
  makeStore: () => Promise<ObjectStore>,
  writers: number,
  perWriter: number,
) {
  describe(`registry race on ${name}`, () => {
    it(`${writers} writers × ${perWriter} versions: unique numbers, no lost alias move, approval or promotion`, async () => {
      const store = await makeStore();
      const events: KilnEvent[] = [];
      const bus = new LocalEventBus();
      bus.subscribe({ source: ['kiln.registry'] }, (event) => {
        events.push(event);
      });
      // Every writer has its own registry instance, as separate processes or Lambdas would.
      const registryOf = () => new ModelRegistry(store, bus);
      const shared = await registryOf().register(registration('race', { actor: 'setup' }));
      expect(shared.version).toBe(1);

      const writer = async (index: number) => {
        const registry = registryOf();
        const mine: Array<{ version: number; sha256: string }> = [];
        for (let round = 0; round < perWriter; round++) {
          const onnx = Buffer.from(`writer ${index} round ${round}`);
          const record = await registry.register(registration('race', { onnx, actor: `writer-${index}` }));
          mine.push({ version: record.version, sha256: sha256Hex(onnx) });
          await registry.setAlias('race', `w${index}`, record.version, `writer-${index}`, 'mine');
          await registry.setAlias('race', 'shared', record.version, `writer-${index}`, 'latest');
          if (round === 0) await registry.approve('race', 1, `approver-${index}`, 'shared sign-off');
          await registry.approve('race', record.version, `reviewer-${index}`, 'reviewed');
          await registry.promote('race', record.version, `reviewer-${index}`, 'ship');
        }
        return mine;
      };
      const results = await Promise.all(Array.from({ length: writers }, (_, index) => writer(index)));
      await bus.drain();
      const registry = registryOf();

      // Version numbers: 2..N+1, each claimed by exactly one writer, each record holding that writer's bytes.
      const claimed = results.flat();
      const total = writers * perWriter;
      expect(claimed.map((entry) => entry.version).sort((a, b) => a - b)).toEqual(
        Array.from({ length: total }, (_, i) => i + 2),
      );
      const records = await registry.listVersions('race');
      expect(records).toHaveLength(total + 1);
      for (const { version, sha256 } of claimed) {
        const record = records.find((candidate) => candidate.version === version);
        expect(record?.lineage.artifactSha256, `version ${version}`).toBe(sha256);
        expect(record?.stage, `version ${version}`).toBe('production');
        expect(record?.approvals?.map((approval) => approval.by)).toHaveLength(1);
      }
      if (records[0]) await registry.verifyArtifacts(records[0]);

      // Approvals of the shared version: every writer's signature is there.
      const approvers = (records.find((record) => record.version === 1)?.approvals ?? []).map((a) => a.by);
      expect(approvers.sort()).toEqual(Array.from({ length: writers }, (_, i) => `approver-${i}`).sort());

      const aliases = await registry.readAliases('race');
      // Each writer's own alias points at its last version.
      results.forEach((mine, index) => {
        expect(aliases.aliases[`w${index}`], `w${index}`).toBe(mine.at(-1)?.version);
      });

      // The shared alias: every move built on the one before it, in one chain that ends where it stands.
      const audit = await registry.readAudit('race');
      const sharedMoves = audit
        .filter((entry) => entry.action === 'set-alias' && entry.alias === 'shared')
        .map((entry) => ({
          previous: (entry.previous as number | undefined) ?? null,
          version: entry.version ?? 0,
        }));
      expect(sharedMoves).toHaveLength(total);
      const sharedChain = chainOf(sharedMoves);
      expect(sharedChain).toHaveLength(total);
      expect(sharedChain.at(-1)).toBe(aliases.aliases.shared);

      // The champion: one linear history through every promoted version, in the events and in the document.
      const championMoves = events
        .filter((event) => event.detailType === 'AliasMoved' && event.detail.alias === 'champion')
        .map((event) => ({
          previous: event.detail.previous as number | null,
          version: event.detail.version as number,
        }));
      expect(championMoves).toHaveLength(total);
      const championChain = chainOf(championMoves);
      expect([...championChain].sort((a, b) => a - b)).toEqual(
        claimed.map((c) => c.version).sort((a, b) => a - b),
      );
      expect(aliases.championHistory).toEqual(championChain);
      expect(aliases.aliases.champion).toBe(championChain.at(-1));
      expect(audit.filter((entry) => entry.action === 'promote')).toHaveLength(total);
      expect(events.filter((event) => event.detailType === 'ModelVersionRegistered')).toHaveLength(total + 1);
    });
  });
}

const roots: string[] = [];
afterAll(async () => {
  await Promise.all(roots.map((root) => rm(root, { recursive: true, force: true })));
});

describeRace(
  'FileSystemStore',
  async () => {
    const root = await mkdtemp(join(tmpdir(), 'kiln-registry-race-'));
    roots.push(root);
    return new FileSystemStore(root);
  },
  12,
  4,
);

describe('S3Store on s3rver', () => {
  const s3rver = useS3rver('kiln-registry-race');

  describeRace(
    'S3Store',
    async () => {
      const s3 = s3rver();
      return S3Store.fromUri(`s3://${s3.bucket}/race`);
    },
    8,
    3,
  );
});
