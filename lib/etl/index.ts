export { INFERENCE_ROW_LIMIT, inferContract, MAX_CATEGORIES, TYPE_AGREEMENT } from './contract.ts';
export { inspectFile, sniffFormat } from './detect.ts';
export { type PipelineFailure, PipelineFailureInputSchema, recordPipelineFailure } from './failure.ts';
export {
  datasetVersion,
  ETL_FORMAT_VERSION,
  type FinalizeInput,
  FinalizeInputSchema,
  type FinalizeResult,
  finalizeEtl,
} from './finalize.ts';
export { type IngestResult, ingestFiles } from './ingest.ts';
export { type DatasetManifest, readManifest } from './manifest.ts';
export { type EtlOptions, EtlOptionsSchema } from './options.ts';
export { type EtlPlan, ensureContract, planEtl, type ShardItem } from './plan.ts';
export type { ColumnProfile } from './profile.ts';
export { parseRawKey, type RawObject, type RawRejection } from './raw.ts';
export {
  readSchema,
  readSchemaIfExists,
  readSchemaWithEtag,
  schemaHash,
  updateSchema,
} from './schema-store.ts';
export {
  processShard,
  type ShardInput,
  ShardInputSchema,
  type ShardResult,
  ShardResultSchema,
} from './shard.ts';
export { DEFAULT_SPLIT, type SplitSpec } from './split.ts';
export { type Row, readCuratedRows, readTableFile } from './tables.ts';
