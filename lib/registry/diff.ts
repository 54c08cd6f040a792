import { z } from 'zod';
import type { VersionRecord } from './records.ts';

const valuePair = z.strictObject({ a: z.unknown(), b: z.unknown() });
const metricPair = z.strictObject({
  a: z.unknown(),
  b: z.unknown(),
  /** b − a when both are numbers. */
  delta: z.number().nullable(),
});

/** Two versions side by side: what changed in parameters, metrics, data, code and artifact. */
export const VersionDiffSchema = z.strictObject({
  a: z.string(),
  b: z.string(),
  /** Hyperparameters that differ (absent on one side = `null`); `same` counts the equal ones. */
  params: z.strictObject({ changed: z.record(z.string(), valuePair), same: z.number().int() }),
  /** Every metric of either version, with the change. */
  metrics: z.record(z.string(), metricPair),
  data: z.strictObject({
    dataset: valuePair,
    datasetVersion: valuePair,
    transformHash: valuePair,
    sameData: z.boolean(),
  }),
  code: z.strictObject({ codeVersion: valuePair, algorithm: valuePair, seed: valuePair }),
  artifact: z.strictObject({ sha256: valuePair, same: z.boolean() }),
  stage: valuePair,
});
export type VersionDiff = z.infer<typeof VersionDiffSchema>;

/** Compares two versions (of one model or of two). */
export function diffVersions(a: VersionRecord, b: VersionRecord): VersionDiff {
  const changed: Record<string, { a: unknown; b: unknown }> = {};
  let same = 0;
  const params = new Set([
    ...Object.keys(a.lineage.hyperparameters),
    ...Object.keys(b.lineage.hyperparameters),
  ]);
  for (const name of [...params].sort()) {
    const left = a.lineage.hyperparameters[name] ?? null;
    const right = b.lineage.hyperparameters[name] ?? null;
    if (JSON.stringify(left) === JSON.stringify(right)) same++;
    else changed[name] = { a: left, b: right };
  }
  const metrics: VersionDiff['metrics'] = {};
  for (const name of [...new Set([...Object.keys(a.metrics), ...Object.keys(b.metrics)])].sort()) {
    const left = a.metrics[name] ?? null;
    const right = b.metrics[name] ?? null;
    const delta =
      typeof left === 'number' && typeof right === 'number' && Number.isFinite(left - right)
        ? right - left
        : null;
    metrics[name] = { a: left, b: right, delta };
  }
  const pair = <T>(left: T, right: T) => ({ a: left, b: right });
  return {
    a: `${a.model}@${a.version}`,
    b: `${b.model}@${b.version}`,
    params: { changed, same },
    metrics,
    data: {
      dataset: pair(a.lineage.dataset, b.lineage.dataset),
      datasetVersion: pair(a.lineage.datasetVersion, b.lineage.datasetVersion),
      transformHash: pair(a.lineage.transformHash, b.lineage.transformHash),
      sameData:
        a.lineage.dataset === b.lineage.dataset &&
        a.lineage.datasetVersion === b.lineage.datasetVersion &&
        a.lineage.transformHash === b.lineage.transformHash,
    },
    code: {
      codeVersion: pair(a.lineage.codeVersion, b.lineage.codeVersion),
      algorithm: pair(a.lineage.algorithm, b.lineage.algorithm),
      seed: pair(a.lineage.seed, b.lineage.seed),
    },
    artifact: {
      sha256: pair(a.lineage.artifactSha256, b.lineage.artifactSha256),
      same: a.lineage.artifactSha256 === b.lineage.artifactSha256,
    },
    stage: pair(a.stage, b.stage),
  };
}
