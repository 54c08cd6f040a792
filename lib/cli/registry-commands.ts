import { readFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { type Command, InvalidArgumentError } from 'commander';
import {
  ConflictError,
  IntegrityError,
  NotFoundError,
  PolicyError,
  ValidationError,
} from '../core/errors.ts';
import { LocalPlatform } from '../local/platform.ts';
import { handleRegistryRequest, registryOpenApi } from '../registry/api.ts';
import type { VersionDiff } from '../registry/diff.ts';
import type { PolicyDocument, PromotionDecision } from '../registry/policy.ts';
import type { AuditEntry, VersionRecord } from '../registry/records.ts';
import type { ModelRegistry, PromotionResult, RollbackResult } from '../registry/registry.ts';
import { parseModelReference } from '../registry/registry.ts';

/** What a registry command needs: a registry, and a way to finish (flush events) when done. */
export interface RegistryContext {
  registry: ModelRegistry;
  done(): Promise<void>;
}

/** Opens the registry a command acts on, from the global options (`--home`). */
export type RegistryRunner = (globals: { home: string }) => Promise<RegistryContext>;

/** The local platform's registry (the home's lake and event bus). */
export const openLocalRegistry: RegistryRunner = async ({ home }) => {
  const platform = await LocalPlatform.open({ home });
  return { registry: platform.registry, done: () => platform.bus.drain() };
};

interface Globals {
  home: string;
  json?: boolean;
}
interface ActingOptions extends Globals {
  reason: string;
  as?: string;
}

/**
 * Adds the registry's lifecycle commands under `kiln models`. Each is a client of the same operations as the
 * HTTP API (`handleRegistryRequest`, in process), so validation, policy and audit cannot differ.
 */
export function addRegistryCommands(models: Command, run: RegistryRunner = openLocalRegistry): void {
  const withRegistry = async <T>(options: Globals, action: (client: Client) => Promise<T>): Promise<T> => {
    const context = await run(options);
    try {
      return await action(new Client(context.registry));
    } finally {
      await context.done();
    }
  };
  const acting = (command: Command) =>
    command
      .requiredOption('--reason <text>', 'why (recorded in the audit log)')
      .option('--as <user>', 'who is acting (default: $KILN_USER or your user name)')
      .option('--json', 'machine-readable output');

  models
    .command('diff')
    .description('compare two versions: parameters, metrics, data, code and artifact')
    .argument('<a>', 'NAME@VERSION or NAME@ALIAS')
    .argument('<b>', 'NAME@VERSION or NAME@ALIAS')
    .option('--json', 'machine-readable output')
    .action(async (a: string, b: string, options, command: Command) => {
      const globals = { ...command.optsWithGlobals(), ...options } as Globals;
      parseModelReference(a);
      parseModelReference(b);
      const diff = await withRegistry(globals, (client) =>
        client.call<VersionDiff>('GET', '/diff', { query: { a, b } }),
      );
      print(globals, diff, () => formatDiff(diff));
    });

  acting(
    models
      .command('approve')
      .description('sign off on a version (candidate → approved), as a person')
      .argument('<version>', 'NAME@VERSION or NAME@ALIAS'),
  ).action(async (reference: string, options, command: Command) => {
    const globals = { ...command.optsWithGlobals(), ...options } as ActingOptions;
    const record = await withRegistry(globals, (client) =>
      client.act<VersionRecord>(reference, 'approve', globals),
    );
    print(globals, record, () => {
      const by = (record.approvals ?? []).map((approval) => approval.by).join(', ');
      return `${record.model}@${record.version} approved (stage ${record.stage}; approvals: ${by})`;
    });
  });

  acting(
    models
      .command('reject')
      .description('turn a candidate or approved version down for good')
      .argument('<version>', 'NAME@VERSION or NAME@ALIAS'),
  ).action(async (reference: string, options, command: Command) => {
    const globals = { ...command.optsWithGlobals(), ...options } as ActingOptions;
    const record = await withRegistry(globals, (client) =>
      client.act<VersionRecord>(reference, 'reject', globals),
    );
    print(globals, record, () => `${record.model}@${record.version} rejected`);
  });

  acting(
    models
      .command('promote')
      .description('promote a version to production and make it the champion, if the policy allows')
      .argument('<version>', 'NAME@VERSION or NAME@ALIAS')
      .option('--dry-run', 'only show what the policy would decide'),
  ).action(async (reference: string, options, command: Command) => {
    const globals = { ...command.optsWithGlobals(), ...options } as ActingOptions & { dryRun?: boolean };
    if (globals.dryRun) {
      const decision = await withRegistry(globals, async (client) => {
        const { model, version } = await client.versionOf(reference);
        return client.call<PromotionDecision>('GET', `/models/${model}/versions/${version}/promotion`);
      });
      print(globals, decision, () => formatDecision(decision));
      return;
    }
    const result = await withRegistry(globals, (client) =>
      client.act<PromotionResult>(reference, 'promote', globals),
    );
    print(globals, result, () =>
      [
        `${result.record.model}@${result.record.version} is in production and the champion (was ${result.previousChampion ?? 'none'})`,
        formatDecision(result.decision),
      ].join('\n'),
    );
  });

  acting(
    models
      .command('rollback')
      .description('move the champion back to the previous production version and archive the current one')
      .argument('<model>', 'NAME, or NAME@VERSION to roll back only if VERSION is still the champion')
      .option('--to <version>', 'roll back to this production version instead', parseVersion),
  ).action(async (reference: string, options, command: Command) => {
    const globals = { ...command.optsWithGlobals(), ...options } as ActingOptions & { to?: number };
    const { model, ref } = parseModelReference(reference);
    if (ref !== undefined && !/^\d+$/.test(ref)) {
      throw new ValidationError(
        `rollback takes NAME or NAME@VERSION (the current champion), got ${reference}`,
      );
    }
    const body = {
      reason: globals.reason,
      ...(ref !== undefined ? { from: Number(ref) } : {}),
      ...(globals.to !== undefined ? { to: globals.to } : {}),
    };
    const result = await withRegistry(globals, (client) =>
      client.call<RollbackResult>('POST', `/models/${model}/rollback`, { body, actor: actorOf(globals) }),
    );
    print(
      globals,
      result,
      () => `${model} champion ${result.from} → ${result.to}; ${model}@${result.from} archived`,
    );
  });

  acting(
    models
      .command('archive')
      .description('retire a version that is not the champion')
      .argument('<version>', 'NAME@VERSION or NAME@ALIAS'),
  ).action(async (reference: string, options, command: Command) => {
    const globals = { ...command.optsWithGlobals(), ...options } as ActingOptions;
    const record = await withRegistry(globals, (client) =>
      client.act<VersionRecord>(reference, 'archive', globals),
    );
    print(globals, record, () => `${record.model}@${record.version} archived`);
  });

  models
    .command('audit')
    .description("a model's audit log: who did what, when and why")
    .argument('<model>', 'model name')
    .option('--json', 'machine-readable output')
    .action(async (model: string, options, command: Command) => {
      const globals = { ...command.optsWithGlobals(), ...options } as Globals;
      const log = await withRegistry(globals, (client) =>
        client.call<{ model: string; entries: AuditEntry[] }>(
          'GET',
          `/models/${encodeURIComponent(model)}/audit`,
        ),
      );
      print(globals, log, () => log.entries.map(formatAuditEntry).join('\n'));
    });

  models
    .command('verify')
    .description('re-hash every artifact of a version against its registration')
    .argument('<version>', 'NAME@VERSION or NAME@ALIAS')
    .option('--json', 'machine-readable output')
    .action(async (reference: string, options, command: Command) => {
      const globals = { ...command.optsWithGlobals(), ...options } as Globals;
      const result = await withRegistry(globals, async (client) => {
        const { model, version } = await client.versionOf(reference);
        return client.call<{ artifacts: Array<{ file: string; sha256: string }> }>(
          'GET',
          `/models/${model}/versions/${version}/verify`,
        );
      });
      print(globals, result, () =>
        result.artifacts
          .map((artifact) => `ok  ${artifact.file.padEnd(20)} sha256:${artifact.sha256}`)
          .join('\n'),
      );
    });

  const policy = models.command('policy').description('the promotion policy (approval as code)');
  policy
    .command('show')
    .description('the policy in force, with its revision')
    .option('--json', 'machine-readable output (edit it and pass it to `policy set`)')
    .action(async (options, command: Command) => {
      const globals = { ...command.optsWithGlobals(), ...options } as Globals;
      const document = await withRegistry(globals, (client) => client.call<PolicyDocument>('GET', '/policy'));
      print(globals, document, () => JSON.stringify(document, null, 2));
    });
  policy
    .command('set')
    .description('store a new policy revision from a JSON file')
    .argument('<file>', 'policy JSON ({ "default": {…}, "models": {…} })')
    .requiredOption('--reason <text>', 'why (kept with the revision)')
    .option('--as <user>', 'who is acting (default: $KILN_USER or your user name)')
    .option(
      '--revision <n>',
      'only if the stored revision is still N (default: the file\'s "revision")',
      parseRevision,
    )
    .option('--json', 'machine-readable output')
    .action(async (file: string, options, command: Command) => {
      const globals = { ...command.optsWithGlobals(), ...options } as ActingOptions & { revision?: number };
      let text: string;
      try {
        text = await readFile(file, 'utf8');
      } catch (error) {
        throw new NotFoundError(`cannot read policy file ${file}`, { cause: error });
      }
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch (error) {
        throw new ValidationError(`${file} is not JSON`, { cause: error });
      }
      const body = {
        policy: parsed,
        reason: globals.reason,
        ...(globals.revision !== undefined ? { expectedRevision: globals.revision } : {}),
      };
      const document = await withRegistry(globals, (client) =>
        client.call<PolicyDocument>('PUT', '/policy', { body, actor: actorOf(globals) }),
      );
      print(globals, document, () => `policy revision ${document.revision} stored (${document.reason})`);
    });
  policy
    .command('history')
    .description('every stored policy revision')
    .option('--json', 'machine-readable output')
    .action(async (options, command: Command) => {
      const globals = { ...command.optsWithGlobals(), ...options } as Globals;
      const history = await withRegistry(globals, (client) =>
        client.call<{ revisions: PolicyDocument[] }>('GET', '/policy/history'),
      );
      print(globals, history, () =>
        history.revisions.length === 0
          ? 'no policy stored: the built-in default (revision 0) is in force'
          : history.revisions
              .map(
                (doc) =>
                  `${String(doc.revision).padStart(4)}  ${doc.updatedAt}  ${doc.updatedBy}  ${doc.reason}`,
              )
              .join('\n'),
      );
    });

  models
    .command('openapi')
    .description("print the registry API's OpenAPI document (docs/registry-openapi.json)")
    .action(() => {
      process.stdout.write(`${JSON.stringify(registryOpenApi(), null, 2)}\n`);
    });
}

/** Calls registry operations in process, turning error responses back into Kiln's named errors. */
class Client {
  constructor(private readonly registry: ModelRegistry) {}

  async call<T>(
    method: string,
    path: string,
    options: { body?: unknown; query?: Record<string, string>; actor?: string } = {},
  ): Promise<T> {
    let unexpected: unknown;
    const response = await handleRegistryRequest(
      this.registry,
      {
        method,
        path,
        body: options.body === undefined ? undefined : JSON.stringify(options.body),
        query: options.query,
        actor: options.actor ?? defaultActor(),
      },
      (error) => {
        unexpected = error;
      },
    );
    if (response.status < 400) return response.body as T;
    if (unexpected !== undefined) throw unexpected;
    const message = (response.body as { error?: string }).error ?? `registry answered ${response.status}`;
    throw errorFor(response.status, message);
  }

  /** Resolves NAME@VERSION or NAME@ALIAS to a version number (an explicit version is required). */
  async versionOf(reference: string): Promise<{ model: string; version: number }> {
    const { model, ref } = parseModelReference(reference);
    if (ref === undefined) {
      throw new ValidationError(`name a version: ${model}@VERSION or ${model}@ALIAS, not just ${model}`);
    }
    if (/^\d+$/.test(ref)) return { model, version: Number(ref) };
    const record = await this.call<VersionRecord>('GET', `/models/${model}/versions/${ref}`);
    return { model, version: record.version };
  }

  async act<T>(reference: string, verb: string, options: ActingOptions): Promise<T> {
    const { model, version } = await this.versionOf(reference);
    return this.call<T>('POST', `/models/${model}/versions/${version}/${verb}`, {
      body: { reason: options.reason },
      actor: actorOf(options),
    });
  }
}

function errorFor(status: number, message: string): Error {
  switch (status) {
    case 400:
    case 413:
      return new ValidationError(message);
    case 403:
      return new PolicyError(message);
    case 404:
      return new NotFoundError(message);
    case 409:
      return new ConflictError(message);
    case 422:
      return new IntegrityError(message);
    default:
      return new Error(message);
  }
}

function actorOf(options: { as?: string }): string {
  return options.as ?? defaultActor();
}

function defaultActor(): string {
  if (process.env.KILN_USER) return process.env.KILN_USER;
  try {
    return userInfo().username || 'local';
  } catch {
    return 'local';
  }
}

function parseVersion(value: string): number {
  if (!/^[1-9]\d*$/.test(value))
    throw new InvalidArgumentError(`expected a version number, got ${JSON.stringify(value)}`);
  return Number(value);
}

function parseRevision(value: string): number {
  if (!/^\d+$/.test(value))
    throw new InvalidArgumentError(`expected a revision number, got ${JSON.stringify(value)}`);
  return Number(value);
}

function print(options: { json?: boolean }, value: unknown, human: () => string): void {
  process.stdout.write(options.json ? `${JSON.stringify(value, null, 2)}\n` : `${human()}\n`);
}

function formatDecision(decision: PromotionDecision): string {
  const lines = [`policy revision ${decision.policyRevision}: ${decision.allowed ? 'allowed' : 'refused'}`];
  for (const text of decision.satisfied) lines.push(`  ✔ ${text}`);
  for (const text of decision.violations) lines.push(`  ✘ ${text}`);
  return lines.join('\n');
}

function formatAuditEntry(entry: AuditEntry): string {
  const version = entry.version !== undefined ? `@${entry.version}` : '';
  const extra = Object.entries(entry)
    .filter(([key]) => !['at', 'action', 'actor', 'reason', 'version'].includes(key))
    .map(([key, value]) => `${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`)
    .join(' ');
  return `${entry.at}  ${entry.action.padEnd(17)} ${version.padEnd(6)} ${entry.actor}  "${entry.reason ?? ''}"${extra ? `  ${extra}` : ''}`;
}

function formatDiff(diff: VersionDiff): string {
  const show = (value: unknown) => (typeof value === 'string' ? value : JSON.stringify(value));
  const lines = [`${diff.a} → ${diff.b}`];
  lines.push(`data      ${diff.data.sameData ? 'same' : 'different'}`);
  for (const field of ['dataset', 'datasetVersion', 'transformHash'] as const) {
    const pair = diff.data[field];
    if (pair.a !== pair.b) lines.push(`  ${field.padEnd(15)} ${show(pair.a)} → ${show(pair.b)}`);
  }
  const changed = Object.entries(diff.params.changed);
  lines.push(`params    ${changed.length} changed, ${diff.params.same} same`);
  for (const [name, pair] of changed) lines.push(`  ${name.padEnd(15)} ${show(pair.a)} → ${show(pair.b)}`);
  lines.push('metrics');
  for (const [name, pair] of Object.entries(diff.metrics)) {
    const delta =
      pair.delta === null ? '' : `  (${pair.delta >= 0 ? '+' : ''}${Number(pair.delta.toPrecision(4))})`;
    lines.push(`  ${name.padEnd(15)} ${show(pair.a)} → ${show(pair.b)}${delta}`);
  }
  for (const field of ['codeVersion', 'algorithm', 'seed'] as const) {
    const pair = diff.code[field];
    if (pair.a !== pair.b) lines.push(`code      ${field} ${show(pair.a)} → ${show(pair.b)}`);
  }
  lines.push(`artifact  ${diff.artifact.same ? 'identical' : 'different'}`);
  return lines.join('\n');
}
