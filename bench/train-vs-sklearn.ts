/**
 * Built-in trainers vs scikit-learn on the shared data sets: same stratified 80/20 seed-0 split,
 * written to temporary CSVs for `bench/sklearn_reference.py`. Run: `npx tsx bench/train-vs-sklearn.ts`.
 * Needs /usr/bin/python3 with scikit-learn (Debian: `apt-get install -y python3-sklearn`).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { classificationMetrics, regressionMetrics } from '../lib/core/metrics.ts';
import { holdoutSplit } from '../lib/ml/split.ts';
import { type Algorithm, type TrainingSet, trainModel } from '../lib/ml/train.ts';

const DATASETS = [
  { file: 'spambase.csv', target: 'type', task: 'binary' as const },
  { file: 'churn.csv', target: 'churn', task: 'binary' as const },
  { file: 'diamonds.csv', target: 'price', task: 'regression' as const },
];
const DATA_DIR = process.env.KILN_DATASETS ?? join(import.meta.dirname, '..', '..', 'shared', 'datasets');
const PYTHON = process.env.PYTHON ?? '/usr/bin/python3';

function parseCsvLine(line: string): Array<string | null> {
  const out: Array<string | null> = [];
  let i = 0;
  while (i <= line.length) {
    if (line[i] === '"') {
      let j = i + 1;
      let s = '';
      while (j < line.length) {
        if (line[j] === '"' && line[j + 1] === '"') {
          s += '"';
          j += 2;
        } else if (line[j] === '"') break;
        else s += line[j++];
      }
      out.push(s);
      i = j + 2;
    } else {
      const j = line.indexOf(',', i);
      const end = j < 0 ? line.length : j;
      const cell = line.slice(i, end);
      out.push(cell === '' || cell === 'NA' ? null : cell);
      i = end + 1;
    }
  }
  return out;
}

/** Numeric columns as floats, string columns ordinal-encoded in sorted order (a stand-in for the transform layer). */
function loadCsv(path: string, target: string, task: TrainingSet['task']): TrainingSet {
  const lines = readFileSync(path, 'utf8')
    .split(/\r?\n/)
    .filter((l) => l.length > 0);
  const header = parseCsvLine(lines[0] ?? '').map(String);
  const rows = lines.slice(1).map(parseCsvLine);
  const t = header.indexOf(target);
  const columns = header.map((_, c) => rows.map((r) => r[c] ?? null));
  const isNumeric = columns.map((col) => col.every((v) => v === null || !Number.isNaN(Number(v))));
  const encode = (col: Array<string | null>, numeric: boolean): number[] => {
    if (numeric) return col.map((v) => (v === null ? Number.NaN : Number(v)));
    const levels = [...new Set(col.filter((v): v is string => v !== null))].sort();
    return col.map((v) => (v === null ? Number.NaN : levels.indexOf(v)));
  };
  const featureCols = header.map((_, c) => c).filter((c) => c !== t);
  const nRows = rows.length;
  const nFeatures = featureCols.length;
  const X = new Float32Array(nRows * nFeatures);
  featureCols.forEach((c, f) => {
    const values = encode(columns[c] ?? [], isNumeric[c] ?? false);
    for (let r = 0; r < nRows; r++) X[r * nFeatures + f] = values[r] ?? Number.NaN;
  });
  const targetCol = columns[t] ?? [];
  const classes = task === 'regression' ? [] : [...new Set(targetCol.map(String))].sort();
  const y = Float64Array.from(targetCol, (v) =>
    task === 'regression' ? Number(v) : classes.indexOf(String(v)),
  );
  return {
    X,
    nRows,
    nFeatures,
    featureNames: featureCols.map((c) => header[c] ?? `f${c}`),
    y,
    task,
    classes,
  };
}

function subset(data: TrainingSet, rows: Uint32Array): TrainingSet {
  const F = data.nFeatures;
  const X = new Float32Array(rows.length * F);
  rows.forEach((r, i) => {
    X.set(data.X.subarray(r * F, (r + 1) * F), i * F);
  });
  return { ...data, X, nRows: rows.length, y: Float64Array.from(rows, (r) => data.y[r] as number) };
}

function writeCsv(path: string, data: TrainingSet): void {
  const F = data.nFeatures;
  const lines = [[...data.featureNames.map((_, f) => `f${f}`), 'target'].join(',')];
  for (let r = 0; r < data.nRows; r++) {
    const cells: string[] = [];
    for (let f = 0; f < F; f++) {
      const v = data.X[r * F + f] as number;
      cells.push(Number.isNaN(v) ? '' : String(v));
    }
    cells.push(String(data.y[r]));
    lines.push(cells.join(','));
  }
  writeFileSync(path, `${lines.join('\n')}\n`);
}

function score(algorithm: Algorithm, train: TrainingSet, test: TrainingSet) {
  const start = performance.now();
  const model = trainModel(algorithm, train, {}, 0);
  const seconds = (performance.now() - start) / 1000;
  const out = model.predict(test.X, test.nRows);
  if (train.task === 'regression') {
    return {
      score: regressionMetrics(test.y, out.values ?? new Float32Array(0)).rmse,
      seconds,
      summary: model.summary,
    };
  }
  const m = classificationMetrics(test.y, out.probabilities ?? new Float32Array(0), train.classes.length);
  return { score: m.accuracy, seconds, summary: model.summary };
}

const tmp = mkdtempSync(join(tmpdir(), 'kiln-bench-'));
const rows: string[] = [];
try {
  for (const ds of DATASETS) {
    const path = join(DATA_DIR, ds.file);
    if (!existsSync(path)) {
      console.error(`skipping ${ds.file}: not found in ${DATA_DIR}`);
      continue;
    }
    const data = loadCsv(path, ds.target, ds.task);
    const { train, test } = holdoutSplit(data.y, data.classes.length, 0.2, 0);
    const trainSet = subset(data, train);
    const testSet = subset(data, test);
    const trainCsv = join(tmp, `${ds.file}.train.csv`);
    const testCsv = join(tmp, `${ds.file}.test.csv`);
    writeCsv(trainCsv, trainSet);
    writeCsv(testCsv, testSet);
    const reference = JSON.parse(
      execFileSync(PYTHON, [join(import.meta.dirname, 'sklearn_reference.py'), ds.task, trainCsv, testCsv], {
        encoding: 'utf8',
      }),
    ) as Record<Algorithm, { score: number; seconds: number }>;
    for (const algorithm of ['gbdt', 'linear'] as const) {
      // Warm-up run so the timing below measures steady-state JIT code, as Python measures compiled code.
      score(algorithm, trainSet, testSet);
      const ours = score(algorithm, trainSet, testSet);
      const ref = reference[algorithm];
      const metric = ds.task === 'regression' ? 'RMSE' : 'accuracy';
      const fmt = (v: number) => (ds.task === 'regression' ? v.toFixed(1) : v.toFixed(4));
      const sklearnName =
        algorithm === 'gbdt'
          ? 'HistGradientBoosting'
          : ds.task === 'regression'
            ? 'Ridge'
            : 'LogisticRegression';
      rows.push(
        `| ${ds.file.replace('.csv', '')} (${train.length}/${test.length}) | ${algorithm} vs ${sklearnName} | ${metric} | ${fmt(ours.score)} | ${fmt(ref.score)} | ${ours.seconds.toFixed(2)} s | ${ref.seconds.toFixed(2)} s | ${(ours.seconds / ref.seconds).toFixed(2)} | ${algorithm === 'gbdt' ? `${ours.summary.bestIteration} rounds` : `${ours.summary.iterations} iters`} |`,
      );
    }
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
console.log(
  '| data set (train/test rows) | model | metric | Kiln | scikit-learn | Kiln train | sklearn train | time ratio | Kiln rounds / iterations |',
);
console.log('|---|---|---|---|---|---|---|---|---|');
for (const row of rows) console.log(row);
