import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { z } from 'zod';
import { ConflictError, describeError, ValidationError } from '../core/errors.ts';
import { discardEvents, type EventPublisher } from '../core/events.ts';
import { readTableFile } from '../etl/tables.ts';
import type { VersionRecord } from '../registry/records.ts';
import { ModelRegistry } from '../registry/registry.ts';
import { assertName, lake } from '../store/layout.ts';
import { assertValidKey, type ObjectStore, toJsonBody } from '../store/object-store.ts';
import { emptyReadStats, parseWindow, readCaptures } from './captures.ts';
import { labelsIngestedEvent } from './events.ts';
import { computeQuality, type LabelRecord, type QualityReport } from './quality.ts';

/**
 * Ingest of late ground truth: a CSV / JSON Lines / Parquet file (gzip ok; read with DuckDB) with a
 * request id column, an optional row column and a label column, validated, normalised to JSON Lines under
 * `monitoring/<model>/labels/` and checked against captured requests so unknown ids are reported at once.
 */

/** Columns accepted for the request id, in order of preference. */
export const REQUEST_ID_COLUMNS = ['requestId', 'request_id'] as const;
/** Columns accepted for the label when none is named (the model's target is tried last). */
export const LABEL_COLUMNS = ['label', 'value'] as const;

/** Options of {@link ingestLabels}. */
export interface IngestLabelsOptions {
  /** Where `LabelsIngested` goes. @default discardEvents */
  events?: EventPublisher;
  now?: Date;
  registry?: ModelRegistry;
  /** Column holding the label. @default `label`, `value`, or the model's target column, whichever exists */
  labelColumn?: string;
  /** Only captures at or after this time are searched for the request ids. @default all */
  capturesSince?: Date | string;
  /** Recorded in the ingest summary. @default the file's base name */
  source?: string;
}

/** A row of the label file that was refused. */
export interface InvalidLabel {
  /** 1-based row of the file (header excluded). */
  row: number;
  reason: string;
}

/** What an ingest did. */
export interface LabelIngestResult {
  model: string;
  /** Content hash of the file (first 16 hex digits): the same file is ingested once. */
  ingestId: string;
  /** Lake key of the normalised labels (null when nothing was accepted). */
  key: string | null;
  summaryKey: string | null;
  /** The same file was ingested before; nothing new was written. */
  alreadyIngested: boolean;
  source: string;
  task: VersionRecord['task'];
  labelColumn: string;
  /** Rows in the file. */
  rows: number;
  /** Distinct (request id, row) labels accepted. */
  accepted: number;
  /** Rows naming a request row already labelled earlier in the same file (the last one wins). */
  duplicates: number;
  invalid: number;
  invalidExamples: InvalidLabel[];
  /** Classification: accepted labels that are none of the model's classes (always scored as misses), by value. */
  unexpectedLabels: Record<string, number>;
  /** Accepted labels joined to a captured request of this model. */
  matched: number;
  /** Accepted labels whose request id (and row) no captured request of this model has. */
  unknownRequestIds: number;
  unknownExamples: string[];
  ingestedAt: string;
}

const MAX_EXAMPLES = 20;
/** Largest landed label file the handler downloads (Lambda's /tmp is 4 GiB here, DuckDB spills there too). */
const MAX_LANDED_BYTES = 2 * 1024 ** 3;

/** An S3 "Object Created" event from EventBridge, or `{ key }` for a manual run. */
export const LabelLandingEventSchema = z.union([
  z.looseObject({
    detail: z.looseObject({
      object: z.looseObject({ key: z.string().min(1), size: z.number().int().nonnegative().optional() }),
    }),
  }),
  z.strictObject({ key: z.string().min(1) }),
]);

/** The landed object and its model, from `labels/<model>/<file>`; ValidationError for anything else. */
export function landedLabelObject(event: unknown): { key: string; model: string; size?: number } {
  const parsed = LabelLandingEventSchema.safeParse(event);
  if (!parsed.success) {
    throw new ValidationError('expected an S3 Object Created event (detail.object.key) or { key }', {
      cause: parsed.error,
    });
  }
  const object = 'detail' in parsed.data ? parsed.data.detail.object : { key: parsed.data.key };
  // S3 event keys are URL-encoded with '+' for spaces.
  const key = object.key.includes('%') ? decodeURIComponent(object.key.replaceAll('+', ' ')) : object.key;
  const match = /^labels\/([^/]+)\/.+[^/]$/.exec(key);
  if (!match?.[1]) {
    throw new ValidationError(
      `label files land as ${lake.labelsLandingPrefix()}<model>/<file>; got ${JSON.stringify(key)}`,
    );
  }
  const model = assertName('model', match[1]);
  return 'size' in object && typeof object.size === 'number'
    ? { key, model, size: object.size }
    : { key, model };
}

/**
 * Ingests a label file that landed in the lake under `labels/<model>/` (what the labels Lambda runs on an
 * S3 Object Created event), then recomputes the model's quality so a drop is reported right away.
 */
export async function ingestLandedLabels(
  store: ObjectStore,
  event: unknown,
  options: Omit<IngestLabelsOptions, 'source'> = {},
): Promise<{ ingest: LabelIngestResult; quality: QualityReport }> {
  const { key, model, size } = landedLabelObject(event);
  try {
    assertValidKey(key);
  } catch (error) {
    throw new ValidationError(
      `label file key ${JSON.stringify(key)} has characters the lake does not use; name files with [A-Za-z0-9!_.*'()@=+-] only`,
      { cause: error },
    );
  }
  if (size !== undefined && size > MAX_LANDED_BYTES) {
    throw new ValidationError(
      `label file ${key} is ${size} bytes; at most ${MAX_LANDED_BYTES} are ingested at once: split it`,
    );
  }
  const dir = await mkdtemp(join(tmpdir(), 'kiln-labels-'));
  try {
    const path = join(dir, basename(key).replace(/[^A-Za-z0-9._-]/g, '_'));
    await store.getToFile(key, path);
    const ingest = await ingestLabels(store, model, path, { ...options, source: key });
    const quality = await computeQuality(
      store,
      { model },
      { events: options.events, now: options.now, registry: options.registry },
    );
    return { ingest, quality };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Ingests a label file for a model: validates and normalises it, stores it under
 * `monitoring/<model>/labels/<stamp>-<hash>.jsonl` (once per distinct file), reports request ids that match
 * no captured request, and publishes `LabelsIngested`. Bad rows are counted and listed, not fatal.
 */
export async function ingestLabels(
  store: ObjectStore,
  model: string,
  file: string,
  options: IngestLabelsOptions = {},
): Promise<LabelIngestResult> {
  assertName('model', model);
  const registry = options.registry ?? new ModelRegistry(store);
  // The task and target decide how labels are read; versions of one model share them.
  const record = await registry.resolve(model);
  const body = await readFile(file);
  const ingestId = createHash('sha256').update(body).digest('hex').slice(0, 16);
  const rows = await readLabelFile(file);
  const normalised = normaliseLabelRows(rows, record, options.labelColumn);
  const now = options.now ?? new Date();
  const source = options.source ?? basename(file);

  const existing = (await store.list(lake.labelsPrefix(model))).find((info) =>
    info.key.endsWith(`-${ingestId}.jsonl`),
  );
  const join = await matchCaptures(
    store,
    registry,
    model,
    normalised.labels,
    parseWindow(options.capturesSince ?? undefined),
  );
  let key: string | null = existing?.key ?? null;
  let summaryKey: string | null = key ? key.replace(/\.jsonl$/, '.json') : null;
  const result: LabelIngestResult = {
    model,
    ingestId,
    key,
    summaryKey,
    alreadyIngested: existing !== undefined,
    source,
    task: record.task,
    labelColumn: normalised.labelColumn,
    rows: rows.length,
    accepted: normalised.labels.length,
    duplicates: normalised.duplicates,
    invalid: normalised.invalid,
    invalidExamples: normalised.invalidExamples,
    unexpectedLabels: normalised.unexpectedLabels,
    matched: join.matched,
    unknownRequestIds: join.unknown,
    unknownExamples: join.unknownExamples,
    ingestedAt: now.toISOString(),
  };
  if (!existing && normalised.labels.length > 0) {
    const id = `${now.toISOString().replace(/:/g, '-')}-${ingestId}`;
    key = lake.labelsFile(model, id, 'jsonl');
    summaryKey = lake.labelsFile(model, id, 'json');
    result.key = key;
    result.summaryKey = summaryKey;
    const lines = normalised.labels.map((label) => JSON.stringify(label)).join('\n');
    try {
      await store.put(key, `${lines}\n`, { ifNoneMatch: '*', contentType: 'application/x-ndjson' });
      await store.put(summaryKey, toJsonBody({ kind: 'kiln.labels-ingest', ...result }), {
        ifNoneMatch: '*',
        contentType: 'application/json',
      });
    } catch (error) {
      // Two ingests of the same file in the same millisecond: the other one stored it.
      if (!(error instanceof ConflictError)) throw error;
      result.alreadyIngested = true;
    }
  }
  await (options.events ?? discardEvents).publish([
    labelsIngestedEvent({
      model,
      key: result.key,
      ingestId,
      alreadyIngested: result.alreadyIngested,
      accepted: result.accepted,
      invalid: result.invalid,
      matched: result.matched,
      unknownRequestIds: result.unknownRequestIds,
    }),
  ]);
  return result;
}

/** Validated, de-duplicated labels of a parsed label file. */
export interface NormalisedLabels {
  labels: LabelRecord[];
  labelColumn: string;
  duplicates: number;
  invalid: number;
  invalidExamples: InvalidLabel[];
  unexpectedLabels: Record<string, number>;
}

/**
 * Reads a label file with DuckDB. CSV columns are read as text: type guessing would turn the classes
 * `yes`/`no` into booleans and `007` into 7; numbers are parsed per task in {@link normaliseLabelRows}.
 */
export async function readLabelFile(path: string): Promise<Array<Record<string, unknown>>> {
  try {
    return await readTableFile(path, { textColumns: true });
  } catch (error) {
    throw new ValidationError(`label file ${basename(path)}: ${describeError(error)}`, { cause: error });
  }
}

/**
 * Validates rows of a label file: a request id (`requestId` or `request_id`), an optional `row` (a
 * non-negative integer, default 0) and a label (a number for regression, a class otherwise; `1.0` or
 * `TRUE` match the classes `1` and `true`). Throws ValidationError only when the file as a whole cannot
 * be a label file (no id or label column).
 */
export function normaliseLabelRows(
  rows: ReadonlyArray<Record<string, unknown>>,
  model: Pick<VersionRecord, 'task' | 'target' | 'classes'>,
  labelColumn?: string,
): NormalisedLabels {
  const { task, target, classes } = model;
  const columns = new Set(rows.flatMap((row) => Object.keys(row)).slice(0, 10_000));
  const idColumn = REQUEST_ID_COLUMNS.find((name) => columns.has(name));
  if (rows.length > 0 && idColumn === undefined) {
    throw new ValidationError(
      `a label file needs a request id column (${REQUEST_ID_COLUMNS.join(' or ')}); it has ${[...columns].join(', ') || 'no columns'}`,
    );
  }
  const candidates = labelColumn ? [labelColumn] : [...LABEL_COLUMNS, target];
  const chosen = candidates.find((name) => columns.has(name));
  if (rows.length > 0 && chosen === undefined) {
    throw new ValidationError(
      `a label file needs a label column (${candidates.join(', ')}); it has ${[...columns].join(', ')}`,
    );
  }
  const known = new Set(classes);
  const byKey = new Map<string, LabelRecord>();
  const unexpected = new Map<string, number>();
  let duplicates = 0;
  let invalid = 0;
  const invalidExamples: InvalidLabel[] = [];
  const refuse = (row: number, reason: string) => {
    invalid++;
    if (invalidExamples.length < MAX_EXAMPLES) invalidExamples.push({ row, reason });
  };
  rows.forEach((row, index) => {
    const line = index + 1;
    const rawId = row[idColumn ?? 'requestId'];
    const requestId =
      typeof rawId === 'string'
        ? rawId.trim()
        : typeof rawId === 'number' || typeof rawId === 'bigint'
          ? String(rawId)
          : '';
    if (requestId === '' || requestId.length > 200) {
      refuse(line, `missing or invalid request id ${JSON.stringify(rawId ?? null)}`);
      return;
    }
    const rawRow = row.row;
    const requestRow = rawRow === undefined || rawRow === null || rawRow === '' ? 0 : Number(rawRow);
    if (!Number.isInteger(requestRow) || requestRow < 0) {
      refuse(line, `row must be a non-negative integer, got ${JSON.stringify(rawRow)}`);
      return;
    }
    const rawLabel = row[chosen ?? 'label'];
    if (
      rawLabel === null ||
      rawLabel === undefined ||
      (typeof rawLabel === 'string' && rawLabel.trim() === '')
    ) {
      refuse(line, `request ${requestId} has no ${chosen}`);
      return;
    }
    let label: string | number;
    if (task === 'regression') {
      const value = typeof rawLabel === 'string' ? Number(rawLabel.trim()) : Number(rawLabel);
      if (typeof rawLabel === 'boolean' || !Number.isFinite(value)) {
        refuse(
          line,
          `${chosen} must be a number for a regression model, got ${JSON.stringify(String(rawLabel))}`,
        );
        return;
      }
      label = value;
    } else {
      if (typeof rawLabel === 'object') {
        refuse(line, `${chosen} must be a class name, got an object`);
        return;
      }
      label = classOf(String(rawLabel).trim(), known);
      if (!known.has(label)) unexpected.set(label, (unexpected.get(label) ?? 0) + 1);
    }
    const key = `${requestId}\u0000${requestRow}`;
    if (byKey.has(key)) duplicates++;
    byKey.set(key, { requestId, row: requestRow, label });
  });
  const unexpectedLabels = Object.fromEntries(
    [...unexpected.entries()].sort((a, b) => b[1] - a[1]).slice(0, MAX_EXAMPLES),
  );
  return {
    labels: [...byKey.values()],
    labelColumn: chosen ?? 'label',
    duplicates,
    invalid,
    invalidExamples,
    unexpectedLabels,
  };
}

/** The model's spelling of a class: `1.0` → `1`, `TRUE` → `true` when that is a class; else the text. */
function classOf(text: string, classes: ReadonlySet<string>): string {
  if (classes.has(text)) return text;
  const number = Number(text);
  if (text !== '' && Number.isFinite(number) && classes.has(String(number))) return String(number);
  const lower = text.toLowerCase();
  if (classes.has(lower)) return lower;
  return text;
}

/** How many labels name a captured request row of any version of the model, and which do not. */
async function matchCaptures(
  store: ObjectStore,
  registry: ModelRegistry,
  model: string,
  labels: ReadonlyArray<LabelRecord>,
  window: { since?: Date },
): Promise<{ matched: number; unknown: number; unknownExamples: string[] }> {
  if (labels.length === 0) return { matched: 0, unknown: 0, unknownExamples: [] };
  const wanted = new Map<string, number[]>();
  for (const label of labels) {
    const rows = wanted.get(label.requestId) ?? [];
    rows.push(label.row);
    wanted.set(label.requestId, rows);
  }
  const rowsOf = new Map<string, number>();
  for (const record of await registry.listVersions(model)) {
    for await (const captured of readCaptures(store, model, record.version, window, emptyReadStats())) {
      if (wanted.has(captured.requestId)) {
        rowsOf.set(captured.requestId, Math.max(rowsOf.get(captured.requestId) ?? 0, captured.inputs.length));
      }
    }
  }
  let matched = 0;
  let unknown = 0;
  const unknownExamples: string[] = [];
  for (const label of labels) {
    const rows = rowsOf.get(label.requestId);
    if (rows !== undefined && label.row < rows) {
      matched++;
      continue;
    }
    unknown++;
    if (unknownExamples.length < MAX_EXAMPLES) {
      unknownExamples.push(
        rows === undefined
          ? label.requestId
          : `${label.requestId}#${label.row} (the request had ${rows} row${rows === 1 ? '' : 's'})`,
      );
    }
  }
  return { matched, unknown, unknownExamples };
}
