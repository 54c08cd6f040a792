import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { ConflictError, NotFoundError, ValidationError } from '../core/errors.ts';
import type { ColumnContract, SchemaContract } from '../core/schema.ts';
import { checkSchemaEdit, readSchemaWithEtag, updateSchema } from '../etl/schema-store.ts';
import { LocalPlatform } from '../local/platform.ts';

interface Globals {
  home: string;
  json?: boolean;
}

interface EditOptions extends Globals {
  file: string;
  ifMatch?: string;
  dryRun?: boolean;
}

/**
 * Adds `kiln schema show` and `kiln schema edit` under `kiln schema`. An edit is validated like every
 * contract (types, limits, categories) and written as a compare-and-swap: it fails with a conflict, changing
 * nothing, when the stored contract changed since the edited file was taken from it.
 */
export function addSchemaCommands(schema: Command): void {
  schema
    .command('show')
    .description('show the schema contract of a dataset (--json prints it as `schema edit` takes it back)')
    .argument('<dataset>', 'dataset name')
    .option('--json', 'machine-readable output: the contract document itself')
    .action(async (dataset: string, options, command: Command) =>
      schemaShow(dataset, { ...command.optsWithGlobals(), ...options }),
    );

  schema
    .command('edit')
    .description(
      'replace a dataset contract with an edited copy (from `schema show --json`): validated, compare-and-swap',
    )
    .argument('<dataset>', 'dataset name')
    .requiredOption('--file <contract.json>', 'the edited contract')
    .option('--if-match <etag>', 'apply only if the stored contract still has this etag (see `schema show`)')
    .option('--dry-run', 'validate and show the changes without writing')
    .option('--json', 'machine-readable output')
    .action(async (dataset: string, options, command: Command) =>
      schemaEdit(dataset, { ...command.optsWithGlobals(), ...options }),
    );
}

async function openStore(options: Globals) {
  return (await LocalPlatform.open({ home: options.home })).store;
}

/** `kiln schema show DATASET`. */
export async function schemaShow(dataset: string, options: Globals): Promise<void> {
  const store = await openStore(options);
  const { contract, etag } = await readSchemaWithEtag(store, dataset);
  if (options.json) {
    process.stdout.write(`${JSON.stringify(contract, null, 2)}\n`);
    return;
  }
  const lines = contract.columns.map((c) => {
    const range = c.min !== undefined ? ` [${c.min}, ${c.max}]` : '';
    const limits =
      c.hardMin !== undefined || c.hardMax !== undefined
        ? ` enforced [${c.hardMin ?? '-inf'}, ${c.hardMax ?? 'inf'}]`
        : '';
    const categories = c.categories
      ? ` {${c.categories.slice(0, 8).join(', ')}${c.categories.length > 8 ? ', …' : ''}}`
      : '';
    return `${c.name.padEnd(28)} ${c.type.padEnd(9)} ${c.nullable ? 'nullable' : 'required'}${range}${limits}${categories}`;
  });
  const threshold =
    contract.quarantineThreshold !== undefined
      ? `  quarantine threshold ${contract.quarantineThreshold}`
      : '';
  lines.push(`etag ${etag}${contract.updatedAt ? `  edited ${contract.updatedAt}` : ''}${threshold}`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

/** `kiln schema edit DATASET --file contract.json`. */
export async function schemaEdit(dataset: string, options: EditOptions): Promise<void> {
  let text: string;
  try {
    text = await readFile(options.file, 'utf8');
  } catch (error) {
    throw new NotFoundError(`cannot read ${options.file}: ${(error as Error).message}`, { cause: error });
  }
  let proposed: unknown;
  try {
    proposed = JSON.parse(text);
  } catch (error) {
    throw new ValidationError(`${options.file} is not valid JSON: ${(error as Error).message}`, {
      cause: error,
    });
  }
  const store = await openStore(options);
  const current = await readSchemaWithEtag(store, dataset);
  if (options.ifMatch !== undefined && options.ifMatch !== current.etag) {
    throw new ConflictError(
      `the contract of ${dataset} changed (etag ${current.etag}, expected ${options.ifMatch}): show it again and re-apply your edit`,
    );
  }
  // The file carries the `updatedAt` of the contract it was taken from: a different one means a lost update.
  const basedOn = (proposed as { updatedAt?: unknown } | null)?.updatedAt;
  if (basedOn !== current.contract.updatedAt) {
    throw new ConflictError(
      `the contract of ${dataset} changed since ${options.file} was taken from it (stored edit ${current.contract.updatedAt ?? 'none'}, file's ${typeof basedOn === 'string' ? basedOn : 'none'}): show it again and re-apply your edit`,
    );
  }
  const next = checkSchemaEdit(dataset, current.contract, proposed);
  const changes = describeChanges(current.contract, next);
  if (options.dryRun) {
    print(options, { dataset, dryRun: true, changes }, () =>
      changes.length === 0 ? 'no changes' : ['would change:', ...changes.map((c) => `  ${c}`)].join('\n'),
    );
    return;
  }
  if (changes.length === 0) {
    print(options, { dataset, updated: false, changes, etag: current.etag }, () => `${dataset}: no changes`);
    return;
  }
  const updated = await updateSchema(store, dataset, next, { expectedEtag: current.etag });
  print(options, { dataset, updated: true, changes, etag: updated.etag }, () =>
    [
      `${dataset}: contract updated (etag ${updated.etag}); the next ETL run enforces it and makes a new version`,
      ...changes.map((c) => `  ${c}`),
    ].join('\n'),
  );
}

function print(options: Globals, value: unknown, human: () => string): void {
  process.stdout.write(options.json ? `${JSON.stringify(value, null, 2)}\n` : `${human()}\n`);
}

/** One line per enforced difference: columns added, removed, or with changed fields; the threshold. */
export function describeChanges(before: SchemaContract, after: SchemaContract): string[] {
  const changes: string[] = [];
  const old = new Map(before.columns.map((c) => [c.name, c]));
  const fresh = new Map(after.columns.map((c) => [c.name, c]));
  for (const column of after.columns) {
    const previous = old.get(column.name);
    if (!previous) {
      changes.push(`+ column ${column.name} (${column.type}, ${column.nullable ? 'nullable' : 'required'})`);
      continue;
    }
    const fields = new Set([...Object.keys(previous), ...Object.keys(column)]) as Set<keyof ColumnContract>;
    for (const field of fields) {
      const a = JSON.stringify(previous[field]);
      const b = JSON.stringify(column[field]);
      if (a !== b) changes.push(`~ ${column.name}.${field}: ${a ?? 'unset'} → ${b ?? 'unset'}`);
    }
  }
  for (const column of before.columns) {
    if (!fresh.has(column.name)) changes.push(`- column ${column.name}`);
  }
  const order = (c: SchemaContract) => c.columns.map((column) => column.name).join(',');
  if (changes.length === 0 && order(before) !== order(after)) changes.push('~ column order');
  if (before.quarantineThreshold !== after.quarantineThreshold) {
    changes.push(
      `~ quarantineThreshold: ${before.quarantineThreshold ?? 'default'} → ${after.quarantineThreshold ?? 'default'}`,
    );
  }
  return changes;
}
