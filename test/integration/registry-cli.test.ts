import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ModelRegistry } from '../../lib/registry/registry.ts';
import { FileSystemStore } from '../../lib/store/fs-store.ts';
import { runKiln } from '../support/cli.ts';
import { gate, registration } from '../support/registry-fixtures.ts';
import { tempDir } from '../support/temp.ts';

/** A platform home with a registry holding versions 1 (gate passed, first) and 2 (gate failed). */
async function home() {
  const dir = join(await tempDir(), 'home');
  await mkdir(join(dir, 'lake'), { recursive: true });
  await writeFile(
    join(dir, 'kiln.json'),
    JSON.stringify({ kind: 'kiln.home', version: 1, createdAt: new Date().toISOString() }),
  );
  const store = new FileSystemStore(join(dir, 'lake'));
  const registry = new ModelRegistry(store);
  await registry.register(
    registration('churn', { gate: gate(true, null, null), metrics: { accuracy: 0.9 } }),
  );
  await registry.register(
    registration('churn', {
      gate: gate(false, 1, -0.01),
      metrics: { accuracy: 0.92 },
      hyperparameters: { max_iter: 50 },
      datasetVersion: 'def456',
    }),
  );
  const kiln = (...args: string[]) => runKiln([...args, '--home', dir], { env: { KILN_USER: 'cli-user' } });
  return { dir, store, registry, kiln };
}

const json = <T>(stdout: string) => JSON.parse(stdout) as T;

describe('kiln models (registry lifecycle from the CLI)', () => {
  it('promote, approve, promote, rollback, audit — each recorded with who, when and why', async () => {
    const { dir, registry, kiln } = await home();
    const first = await kiln('models', 'promote', 'churn@1', '--reason', 'first model', '--json');
    expect(first.code, first.stderr).toBe(0);
    expect(json<{ previousChampion: null; record: { stage: string } }>(first.stdout)).toMatchObject({
      previousChampion: null,
      record: { stage: 'production' },
    });

    const approve = await kiln(
      'models',
      'approve',
      'churn@2',
      '--reason',
      'accuracy is up on the same rows',
      '--as',
      'alice',
    );
    expect(approve.code, approve.stderr).toBe(0);
    expect(approve.stdout).toContain('churn@2 approved (stage approved; approvals: alice)');

    const dryRun = await kiln('models', 'promote', 'churn@2', '--reason', 'check', '--dry-run');
    expect(dryRun.code, dryRun.stderr).toBe(0);
    expect(dryRun.stdout).toContain('policy revision 0: allowed');
    expect(dryRun.stdout).toContain('✔ approved by alice');

    const promote = await kiln('models', 'promote', 'churn@2', '--reason', 'approved by alice');
    expect(promote.code, promote.stderr).toBe(0);
    expect(promote.stdout).toContain('churn@2 is in production and the champion (was 1)');

    const rollback = await kiln(
      'models',
      'rollback',
      'churn@2',
      '--reason',
      'error rate up',
      '--as',
      'oncall',
    );
    expect(rollback.code, rollback.stderr).toBe(0);
    expect(rollback.stdout).toContain('churn champion 2 → 1; churn@2 archived');
    expect((await registry.readAliases('churn')).aliases.champion).toBe(1);

    const audit = await kiln('models', 'audit', 'churn', '--json');
    const entries = json<{ entries: Array<{ action: string; actor: string; reason: string; at: string }> }>(
      audit.stdout,
    ).entries;
    expect(entries.map((e) => [e.action, e.actor, e.reason])).toEqual([
      ['register', 'training-pipeline', 'registered'],
      ['register', 'training-pipeline', 'registered'],
      ['promote', 'cli-user', 'first model'],
      ['approve', 'alice', 'accuracy is up on the same rows'],
      ['promote', 'cli-user', 'approved by alice'],
      ['rollback', 'oncall', 'error rate up'],
    ]);
    // The CLI's changes went out on the local bus (and its log) like any other host's.
    const logged = (await readFile(join(dir, 'events.jsonl'), 'utf8'))
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { detailType: string; detail: { actor: string } });
    expect(logged.map((event) => event.detailType)).toContain('ModelVersionApproved');
    expect(logged.find((event) => event.detailType === 'ModelVersionApproved')?.detail.actor).toBe('alice');

    const show = await kiln('models', 'show', 'churn@2', '--json');
    const record = json<{
      stage: string;
      lineage: Record<string, unknown>;
      approvals: unknown[];
      history: unknown[];
    }>(show.stdout);
    expect(record).toMatchObject({
      stage: 'archived',
      lineage: { datasetVersion: 'def456', algorithm: 'gbdt' },
    });
    expect(record.approvals).toHaveLength(1);
    expect(record.history).toHaveLength(4);
  });

  it('refuses a promotion that breaks the policy: clear error, nothing changed, audited', async () => {
    const { registry, kiln } = await home();
    await registry.promote('churn', 1, 'training-pipeline', 'first');
    const before = await registry.getVersion('churn', 2);
    const refused = await kiln('models', 'promote', 'churn@2', '--reason', 'I like it');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(
      /^kiln: promotion of churn@2 to production refused by policy revision 0: none of the promotion paths holds: approval: needs 1 approval.*gate: did not pass/,
    );
    expect(await registry.getVersion('churn', 2)).toEqual(before);
    expect((await registry.readAliases('churn')).aliases.champion).toBe(1);
    const audit = await registry.readAudit('churn');
    expect(audit.at(-1)).toMatchObject({
      action: 'promotion-refused',
      version: 2,
      actor: 'cli-user',
      reason: 'I like it',
    });
  });

  it('diffs two versions: parameters, metrics and data', async () => {
    const { kiln } = await home();
    const human = await kiln('models', 'diff', 'churn@1', 'churn@2');
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toContain('churn@1 → churn@2');
    expect(human.stdout).toMatch(/datasetVersion\s+abc123 → def456/);
    expect(human.stdout).toMatch(/max_iter\s+10 → 50/);
    expect(human.stdout).toMatch(/accuracy\s+0.9 → 0.92\s+\(\+0.02\)/);
    const machine = await kiln('models', 'diff', 'churn@1', 'churn@2', '--json');
    expect(json<Record<string, unknown>>(machine.stdout)).toMatchObject({
      params: { changed: { max_iter: { a: 10, b: 50 } }, same: 0 },
      data: { sameData: false, datasetVersion: { a: 'abc123', b: 'def456' } },
    });
  });

  it('edits the policy as a file with compare-and-swap and keeps its history', async () => {
    const { dir, kiln } = await home();
    const shown = await kiln('models', 'policy', 'show', '--json');
    expect(json<{ revision: number }>(shown.stdout).revision).toBe(0);
    const file = join(dir, 'policy.json');
    const policy = {
      ...json<Record<string, unknown>>(shown.stdout),
      default: { approvers: ['alice'], production: { anyOf: [{ rule: 'approval', minApprovals: 1 }] } },
    };
    await writeFile(file, JSON.stringify(policy));
    const set = await kiln(
      'models',
      'policy',
      'set',
      file,
      '--reason',
      'people approve production',
      '--as',
      'lead',
    );
    expect(set.code, set.stderr).toBe(0);
    expect(set.stdout).toContain('policy revision 1 stored');
    // The same file again is based on revision 0: stale, refused.
    const stale = await kiln('models', 'policy', 'set', file, '--reason', 'again');
    expect(stale.code).toBe(1);
    expect(stale.stderr).toContain('the policy is at revision 1, not 0');
    const history = await kiln('models', 'policy', 'history');
    expect(history.stdout).toMatch(/^\s+1\s+\S+\s+lead\s+people approve production$/m);
    const bob = await kiln('models', 'approve', 'churn@2', '--reason', 'lgtm', '--as', 'bob');
    expect(bob.code).toBe(1);
    expect(bob.stderr).toContain('bob is not an approver of churn (approvers: alice)');
  });

  it('answers bad input with a clear error and the right exit code', async () => {
    const { store, registry, kiln } = await home();
    const cases: Array<[string[], number, RegExp]> = [
      [['models', 'approve', 'Churn@1', '--reason', 'x'], 2, /invalid model name "Churn"/],
      [['models', 'approve', 'churn', '--reason', 'x'], 2, /name a version: churn@VERSION or churn@ALIAS/],
      [['models', 'approve', 'nope@1', '--reason', 'x'], 1, /model version nope@1 does not exist/],
      [['models', 'approve', 'churn@1'], 2, /required option '--reason <text>' not specified/],
      [['models', 'archive', 'churn@ghost', '--reason', 'x'], 1, /model churn has no alias ghost/],
      [['models', 'rollback', 'churn', '--reason', 'x'], 1, /churn has no champion to roll back/],
      [['models', 'rollback', 'churn@champion', '--reason', 'x'], 2, /rollback takes NAME or NAME@VERSION/],
      [
        ['models', 'policy', 'set', '/nonexistent/policy.json', '--reason', 'x'],
        1,
        /cannot read policy file/,
      ],
    ];
    for (const [args, code, message] of cases) {
      const result = await kiln(...args);
      expect(result.code, args.join(' ')).toBe(code);
      expect(result.stderr, args.join(' ')).toMatch(message);
    }
    // A tampered artifact is caught by verify, and the version cannot be promoted.
    const record = await registry.getVersion('churn', 1);
    await writeFile(store.pathOf(record.artifacts['model.onnx']?.key ?? ''), 'swapped weights');
    const verify = await kiln('models', 'verify', 'churn@1');
    expect(verify.code).toBe(1);
    expect(verify.stderr).toMatch(/churn@1 model\.onnx was modified after registration/);
    const promote = await kiln('models', 'promote', 'churn@1', '--reason', 'x');
    expect(promote.code).toBe(1);
    expect((await registry.readAliases('churn')).aliases).toEqual({});
  });
});
