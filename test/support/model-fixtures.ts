import { existsSync, readFileSync } from 'node:fs';
import type { ColumnContract } from '../../lib/core/schema.ts';
import {
  applyTransform,
  coerceRowValues,
  defaultTransformSpec,
  type FittedTransform,
  fitTransform,
} from '../../lib/core/transform.ts';
import { OnnxModel } from '../../lib/ml/onnx-model.ts';
import { type Algorithm, type Task, type TrainedModel, trainModel } from '../../lib/ml/train.ts';
import { parseCsv } from '../../lib/serving/csv.ts';
import { silentLogger } from '../../lib/serving/model-host.ts';
import { type LoadedModelBundle, MemoryModelSource } from '../../lib/serving/model-source.ts';
import {
  createInferenceServer,
  type InferenceServer,
  type InferenceServerOptions,
} from '../../lib/serving/server.ts';

/** Where the shared data sets live next to the repository. */
export const SPAMBASE_CSV = new URL('../../../shared/datasets/spambase.csv', import.meta.url).pathname;

/** A trained model with everything a server or a test needs around it. */
export interface ModelFixture {
  bundle: LoadedModelBundle;
  trained: TrainedModel;
  transform: FittedTransform;
  /** Raw request rows (no target), typed as a JSON client would send them. */
  rows: Record<string, unknown>[];
  /** The target column's values, aligned with `rows`. */
  targets: unknown[];
  target: string;
  columns: ColumnContract[];
}

/** A small deterministic PRNG (mulberry32) so fixtures are identical on every run. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function train(
  name: string,
  version: string,
  columns: ColumnContract[],
  target: string,
  data: Record<string, unknown>[],
  task: Task,
  algorithm: Algorithm,
  params: Record<string, unknown>,
): ModelFixture {
  const spec = defaultTransformSpec(columns, target);
  const transform = fitTransform(spec, data);
  const rows = data.map((row) => {
    const { [target]: _target, ...rest } = row;
    return rest;
  });
  const { features, nRows, nFeatures } = applyTransform(transform, rows);
  const targets = data.map((row) => row[target]);
  const classes = task === 'regression' ? [] : [...new Set(targets.map(String))].sort();
  const y = Float64Array.from(targets, (t) =>
    task === 'regression' ? Number(t) : classes.indexOf(String(t)),
  );
  const trained = trainModel(
    algorithm,
    { X: features, nRows, nFeatures, featureNames: transform.featureNames, y, task, classes },
    params,
    7,
  );
  return {
    bundle: { name, version, onnx: trained.toOnnx(), transform },
    trained,
    transform,
    rows,
    targets,
    target,
    columns,
  };
}

/**
 * Spambase (57 numeric features, spam/nonspam) from ../shared/datasets when present; otherwise a synthetic
 * stand-in with the same shape so the suite still runs on a checkout without the shared folder.
 */
export function spambaseFixture(
  options: {
    name?: string;
    version?: string;
    algorithm?: Algorithm;
    params?: Record<string, unknown>;
    limit?: number;
  } = {},
): ModelFixture {
  const { header, records } = existsSync(SPAMBASE_CSV) ? readSpambase() : syntheticSpambase();
  // The file is sorted by class, so a subset takes every k-th row rather than the first ones.
  const step = Math.max(1, Math.floor(records.length / (options.limit ?? records.length)));
  const subset = records.filter((_, i) => i % step === 0).slice(0, options.limit ?? records.length);
  const columns: ColumnContract[] = header.map((name) =>
    name === 'type'
      ? { name, type: 'string', nullable: false, categories: ['nonspam', 'spam'] }
      : { name, type: 'number', nullable: true },
  );
  return train(
    options.name ?? 'spam',
    options.version ?? '1',
    columns,
    'type',
    subset,
    'binary',
    options.algorithm ?? 'gbdt',
    options.params ?? { max_iter: 20 },
  );
}

function readSpambase(): { header: string[]; records: Record<string, unknown>[] } {
  const table = parseCsv(readFileSync(SPAMBASE_CSV, 'utf8'), 1_000_000);
  const header = (table[0] ?? []).map(String);
  const records = table.slice(1).map((fields) => {
    const row: Record<string, unknown> = {};
    header.forEach((h, i) => {
      const v = fields[i];
      row[h] = h === 'type' ? v : v === null || v === undefined ? null : Number(v);
    });
    return row;
  });
  return { header, records };
}

function syntheticSpambase(): { header: string[]; records: Record<string, unknown>[] } {
  const random = rng(11);
  const header = [...Array.from({ length: 57 }, (_, i) => `f${i}`), 'type'];
  const records = Array.from({ length: 2000 }, () => {
    const row: Record<string, unknown> = {};
    let score = 0;
    for (let i = 0; i < 57; i++) {
      const v = Math.round(random() * 1000) / 100;
      row[`f${i}`] = v;
      if (i < 5) score += v;
    }
    row.type = score + random() * 10 > 30 ? 'spam' : 'nonspam';
    return row;
  });
  return { header, records };
}

const COLORS = ['red', 'green', 'blue'];

/** A mixed-type data set (number, integer, string, boolean inputs) for regression and multiclass models. */
export function mixedFixture(
  task: 'regression' | 'multiclass',
  options: { name?: string; version?: string; algorithm?: Algorithm; rows?: number; seed?: number } = {},
): ModelFixture {
  const random = rng(options.seed ?? 3);
  const n = options.rows ?? 600;
  const data = Array.from({ length: n }, () => {
    const x = random() * 10;
    const count = Math.floor(random() * 20);
    const color = COLORS[Math.floor(random() * COLORS.length)] as string;
    const flag = random() < 0.5;
    const y =
      3 * x + (color === 'red' ? 10 : color === 'green' ? -5 : 0) + (flag ? 4 : 0) + count * 0.5 + random();
    const label = y < 10 ? 'low' : y < 25 ? 'mid' : 'high';
    return { x, count, color, flag, y: task === 'regression' ? y : label };
  });
  const columns: ColumnContract[] = [
    { name: 'x', type: 'number', nullable: true },
    { name: 'count', type: 'integer', nullable: true },
    { name: 'color', type: 'string', nullable: true, categories: COLORS },
    { name: 'flag', type: 'boolean', nullable: true },
    task === 'regression'
      ? { name: 'y', type: 'number', nullable: false }
      : { name: 'y', type: 'string', nullable: false, categories: ['high', 'low', 'mid'] },
  ];
  return train(
    options.name ?? (task === 'regression' ? 'price' : 'tier'),
    options.version ?? '1',
    columns,
    'y',
    data,
    task,
    options.algorithm ?? 'gbdt',
    { max_iter: 30 },
  );
}

/** A server started on 127.0.0.1 with an ephemeral port, closed by `close`. */
export interface RunningServer {
  url: string;
  inference: InferenceServer;
  close(): Promise<void>;
}

/** Starts an inference server for a test; silent unless `logger` is given. */
export async function startServer(options: InferenceServerOptions): Promise<RunningServer> {
  const inference = createInferenceServer({ logger: silentLogger, ...options });
  const address = await inference.listen(0, '127.0.0.1');
  return { url: `http://127.0.0.1:${address.port}`, inference, close: () => inference.close() };
}

/** A source serving the given fixtures' bundles. */
export function sourceOf(...fixtures: ModelFixture[]): MemoryModelSource {
  const source = new MemoryModelSource();
  for (const f of fixtures) source.publish(f.bundle);
  return source;
}

/** The HTTP answer of `call`, body read as text and (when it is JSON) parsed. */
export interface Reply {
  status: number;
  headers: Headers;
  text: string;
  json: unknown;
}

/** One HTTP request with fetch; never throws on a status. */
export async function call(
  url: string,
  init: { method?: string; body?: string | Uint8Array; headers?: Record<string, string> } = {},
): Promise<Reply> {
  const response = await fetch(url, {
    method: init.method ?? (init.body === undefined ? 'GET' : 'POST'),
    ...(init.body === undefined ? {} : { body: init.body }),
    headers: init.headers ?? {},
  });
  const text = await response.text();
  let json: unknown;
  if ((response.headers.get('content-type') ?? '').includes('json')) json = JSON.parse(text);
  return { status: response.status, headers: response.headers, text, json };
}

/** POST a JSON document. */
export function postJson(url: string, value: unknown, headers: Record<string, string> = {}): Promise<Reply> {
  return call(url, {
    method: 'POST',
    body: JSON.stringify(value),
    headers: { 'content-type': 'application/json', ...headers },
  });
}

/** What OnnxModel says for these raw rows, through the same coercion and transform as the server. */
export async function directPredictions(
  fixture: ModelFixture,
  rows: Array<Record<string, unknown> | unknown[]>,
) {
  const model = await OnnxModel.load(fixture.bundle.onnx, { provider: 'cpu' });
  try {
    const coerced = rows.map((r) => coerceRowValues(fixture.transform, r));
    const { features, nRows } = applyTransform(fixture.transform, coerced);
    return await model.run(features, nRows);
  } finally {
    await model.release();
  }
}

/** Value of one sample line of a Prometheus text document (sum over series matching every label given). */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) {
      total += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
  }
  return total;
}
