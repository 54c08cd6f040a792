import { NotFoundError, ValidationError } from '../core/errors.ts';
import type { SchemaContract } from '../core/schema.ts';
import { assertName, lake } from '../store/layout.ts';
import { type ObjectStore, readJsonIfExists } from '../store/object-store.ts';
import type { ColumnProfile } from './profile.ts';

/** A curated dataset version's manifest (`curated/<dataset>/<version>/manifest.json`). */
export interface DatasetManifest {
  kind: 'kiln.dataset';
  etlFormatVersion: number;
  dataset: string;
  version: string;
  createdAt: string;
  runId: string;
  schema: SchemaContract;
  schemaHash: string;
  rows: { read: number; accepted: number; quarantined: number; train: number; test: number };
  sources: {
    key: string;
    sha256: string;
    format: string;
    read: number;
    accepted: number;
    quarantined: number;
    /** Byte-range shards the object was processed in, when more than one. */
    shards?: number;
  }[];
  split: { method: 'row-hash'; seed: number; testFraction: number; trainRows: number; testRows: number };
  files: Record<'train' | 'test', { key: string; sha256: string; bytes: number; rows: number }>;
  profile: ColumnProfile[];
  quarantine: { key: string; rows: number }[];
}

/** A dataset version's manifest; without `version`, the one `curated/<dataset>/latest.json` points to. */
export async function readManifest(
  store: ObjectStore,
  dataset: string,
  version?: string,
): Promise<DatasetManifest> {
  assertName('dataset', dataset);
  let resolved = version;
  if (!resolved) {
    const head = await readJsonIfExists<{ version?: unknown }>(store, lake.datasetHead(dataset));
    if (typeof head?.version !== 'string')
      throw new NotFoundError(`dataset ${dataset} has no curated version yet`);
    resolved = head.version;
  }
  if (!/^[0-9a-f]{16}$/.test(resolved))
    throw new ValidationError(`invalid dataset version ${JSON.stringify(resolved)}: expected 16 hex digits`);
  const manifest = await readJsonIfExists<DatasetManifest>(
    store,
    lake.curatedFile(dataset, resolved, 'manifest.json'),
  );
  if (!manifest) throw new NotFoundError(`dataset ${dataset} has no version ${resolved}`);
  return manifest;
}
