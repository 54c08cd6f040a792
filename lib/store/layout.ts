import { ValidationError } from '../core/errors.ts';

/** Names of datasets and models: lower-case, digits, `-` and `_`, starting with a letter, at most 64 chars. */
export const NAME_PATTERN = /^[a-z][a-z0-9_-]{0,63}$/;

/** Throws a ValidationError unless `name` is a valid dataset or model name. */
export function assertName(kind: 'dataset' | 'model', name: string): string {
  if (!NAME_PATTERN.test(name)) {
    throw new ValidationError(
      `invalid ${kind} name ${JSON.stringify(name)}: use 1-64 lower-case letters, digits, '-' or '_', starting with a letter`,
    );
  }
  return name;
}

/** The lake's key layout, identical on S3 and on the local folder (see DESIGN.md). */
export const lake = {
  rawPrefix: (dataset: string) => `raw/${dataset}/`,
  raw: (dataset: string, ingestId: string, file: string) => `raw/${dataset}/${ingestId}/${file}`,
  /** What the ETL learnt about one raw object (format, hash, or why it was rejected); raw itself stays untouched. */
  rawIndex: (rawKey: string) => `index/${rawKey}.json`,
  /** Under `curated-staging/`, the prefix the ETL shard function may write (LakePrefix.curatedStaging). */
  stagingFile: (dataset: string, runId: string, shard: string) =>
    `curated-staging/${dataset}/${runId}/${shard}.parquet`,
  quarantineFile: (dataset: string, runId: string, shard: string) =>
    `quarantine/${dataset}/${runId}/${shard}.parquet`,
  schema: (dataset: string) => `schemas/${dataset}/schema.json`,
  stagingPrefix: (dataset: string, runId: string) => `staging/${dataset}/${runId}/`,
  curatedPrefix: (dataset: string, version?: string) =>
    version ? `curated/${dataset}/${version}/` : `curated/${dataset}/`,
  curatedFile: (dataset: string, version: string, file: 'train.parquet' | 'test.parquet' | 'manifest.json') =>
    `curated/${dataset}/${version}/${file}`,
  datasetHead: (dataset: string) => `curated/${dataset}/latest.json`,
  quarantinePrefix: (dataset: string, runId: string) => `quarantine/${dataset}/${runId}/`,
  runReport: (pipeline: 'etl' | 'training', runId: string) => `runs/${pipeline}/${runId}.json`,
  trainingOutput: (jobName: string) => `models-staging/${jobName}/`,
  modelPrefix: (model: string, version: number) => `models/${model}/${version}/`,
  modelFile: (model: string, version: number, file: string) => `models/${model}/${version}/${file}`,
  registryVersion: (model: string, version: number) =>
    `registry/${model}/versions/${String(version).padStart(6, '0')}.json`,
  registryVersionsPrefix: (model: string) => `registry/${model}/versions/`,
  registryAliases: (model: string) => `registry/${model}/aliases.json`,
  registryAudit: (model: string, entryId: string) => `registry/${model}/audit/${entryId}.json`,
  capturePrefix: (model: string, version: number) => `capture/${model}/${version}/`,
  monitoringPrefix: (model: string) => `monitoring/${model}/`,
  /** Drift reports of one model version: `<stamp>.json` and a readable `<stamp>.html` beside it. */
  driftReportsPrefix: (model: string, version: number) => `monitoring/${model}/${version}/drift/`,
  driftReport: (model: string, version: number, stamp: string, ext: 'json' | 'html') =>
    `monitoring/${model}/${version}/drift/${stamp}.${ext}`,
  /** Late ground truth, normalised at ingest: `<stamp>-<hash>.jsonl` plus its ingest summary `.json`. */
  labelsPrefix: (model: string) => `monitoring/${model}/labels/`,
  labelsFile: (model: string, id: string, ext: 'jsonl' | 'json') => `monitoring/${model}/labels/${id}.${ext}`,
  qualityReportsPrefix: (model: string) => `monitoring/${model}/quality/`,
  qualityReport: (model: string, stamp: string) => `monitoring/${model}/quality/${stamp}.json`,
  /** Where label files land on S3 to be ingested (`labels/<model>/<file>`); not part of the curated lake. */
  labelsLandingPrefix: (model?: string) => (model ? `labels/${model}/` : 'labels/'),
} as const;

/** Splits `s3://bucket/key` into its parts; throws on anything else. */
export function parseS3Uri(uri: string): { bucket: string; key: string } {
  const match = /^s3:\/\/([^/]+)\/?(.*)$/.exec(uri);
  if (!match?.[1]) throw new ValidationError(`not an s3:// URI: ${JSON.stringify(uri)}`);
  return { bucket: match[1], key: match[2] ?? '' };
}
