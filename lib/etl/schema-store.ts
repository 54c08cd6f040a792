import { createHash } from 'node:crypto';
import { z } from 'zod';
import { ConflictError, IntegrityError, NotFoundError, ValidationError } from '../core/errors.ts';
import { contractProblems, type SchemaContract, SchemaContractSchema } from '../core/schema.ts';
import { assertName, lake } from '../store/layout.ts';
import { type ObjectStore, toJsonBody } from '../store/object-store.ts';

/** Reads and validates the stored contract; undefined when the dataset has none yet. */
export async function readSchemaIfExists(
  store: ObjectStore,
  dataset: string,
): Promise<{ contract: SchemaContract; etag: string } | undefined> {
  const key = lake.schema(assertName('dataset', dataset));
  const info = await store.head(key);
  if (!info) return undefined;
  const body = await store.get(key);
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch (error) {
    throw new IntegrityError(`schema ${key} is not valid JSON`, { cause: error });
  }
  const result = SchemaContractSchema.safeParse(parsed);
  if (!result.success) throw new IntegrityError(`schema ${key} is invalid: ${result.error.message}`);
  return { contract: result.data, etag: info.etag };
}

/** The dataset's schema contract with its etag (for `updateSchema`); NotFoundError when none exists. */
export async function readSchemaWithEtag(
  store: ObjectStore,
  dataset: string,
): Promise<{ contract: SchemaContract; etag: string }> {
  const found = await readSchemaIfExists(store, dataset);
  if (!found)
    throw new NotFoundError(
      `dataset ${dataset} has no schema contract yet: ingest data and run the ETL first`,
    );
  return found;
}

/** The dataset's schema contract (`kiln schema show`); NotFoundError when none exists. */
export async function readSchema(store: ObjectStore, dataset: string): Promise<SchemaContract> {
  return (await readSchemaWithEtag(store, dataset)).contract;
}

/**
 * Validates a proposed contract for `dataset` (zod, then the semantic checks of `contractProblems`) and returns
 * it as it would be stored: creation time kept from `current`, `updatedAt` now. Throws ValidationError naming
 * every problem.
 */
export function checkSchemaEdit(dataset: string, current: SchemaContract, proposed: unknown): SchemaContract {
  const parsed = SchemaContractSchema.safeParse(proposed);
  if (!parsed.success)
    throw new ValidationError(`invalid schema contract for ${dataset}: ${z.prettifyError(parsed.error)}`);
  if (parsed.data.dataset !== dataset) {
    throw new ValidationError(`schema contract names dataset ${parsed.data.dataset}, expected ${dataset}`);
  }
  const problems = contractProblems(parsed.data);
  if (problems.length > 0)
    throw new ValidationError(`invalid schema contract for ${dataset}: ${problems.join('; ')}`);
  return { ...parsed.data, createdAt: current.createdAt, updatedAt: new Date().toISOString() };
}

/**
 * Replaces a dataset's contract after validating it (zod + semantic checks), as a compare-and-swap on
 * `expectedEtag` (default: the etag read just now), so two editors cannot silently overwrite each other.
 */
export async function updateSchema(
  store: ObjectStore,
  dataset: string,
  contract: unknown,
  options: { expectedEtag?: string } = {},
): Promise<{ contract: SchemaContract; etag: string }> {
  const current = await readSchemaWithEtag(store, dataset);
  const next = checkSchemaEdit(dataset, current.contract, contract);
  const info = await store.put(lake.schema(dataset), toJsonBody(next), {
    ifMatch: options.expectedEtag ?? current.etag,
    contentType: 'application/json',
  });
  return { contract: next, etag: info.etag };
}

/** Stores an inferred contract create-only; when another writer won the race, returns the winner's. */
export async function storeInferredContract(
  store: ObjectStore,
  contract: SchemaContract,
): Promise<SchemaContract> {
  try {
    await store.put(lake.schema(contract.dataset), toJsonBody(contract), {
      ifNoneMatch: '*',
      contentType: 'application/json',
    });
    return contract;
  } catch (error) {
    if (!(error instanceof ConflictError)) throw error;
    return readSchema(store, contract.dataset);
  }
}

/** Content hash of the enforced part of a contract (columns and threshold; not timestamps). */
export function schemaHash(contract: SchemaContract): string {
  const enforced = { columns: contract.columns, quarantineThreshold: contract.quarantineThreshold ?? null };
  return createHash('sha256').update(JSON.stringify(enforced)).digest('hex');
}
