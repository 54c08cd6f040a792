/**
 * Baseline profiles of raw input columns and of predictions, saved with each model so the monitor can
 * compare live traffic with what the model was trained on (PSI, KS, chi-squared need bins or samples).
 */
export interface NumericProfile {
  kind: 'numeric';
  count: number;
  missing: number;
  mean: number;
  std: number;
  min: number;
  max: number;
  /** Bin edges (deciles of the training data, deduplicated); bin i holds edges[i-1] < x <= edges[i]. */
  edges: number[];
  /** Share of non-missing values per bin; length edges.length + 1 (below the first edge, …, above the last). */
  shares: number[];
  /** A seeded, evenly spaced sample of sorted values, for two-sample tests (at most 1000). */
  sample: number[];
}

export interface CategoricalProfile {
  kind: 'categorical';
  count: number;
  missing: number;
  /** Share of non-missing values per category; rare ones pooled under `__other__`. */
  shares: Record<string, number>;
}

export type ColumnProfile = NumericProfile | CategoricalProfile;

const MAX_CATEGORIES = 50;
const SAMPLE_SIZE = 1000;

/** Profiles one column of raw values (numbers or strings; null/undefined/NaN count as missing). */
export function profileColumn(
  values: ReadonlyArray<unknown>,
  kind: 'numeric' | 'categorical',
): ColumnProfile {
  let missing = 0;
  if (kind === 'numeric') {
    const numbers: number[] = [];
    for (const value of values) {
      const number =
        typeof value === 'number' ? value : typeof value === 'bigint' ? Number(value) : Number.NaN;
      if (Number.isFinite(number)) numbers.push(number);
      else missing++;
    }
    numbers.sort((a, b) => a - b);
    const n = numbers.length;
    const mean = n ? numbers.reduce((sum, x) => sum + x, 0) / n : 0;
    const variance = n > 1 ? numbers.reduce((sum, x) => sum + (x - mean) ** 2, 0) / (n - 1) : 0;
    const edges = [
      ...new Set([1, 2, 3, 4, 5, 6, 7, 8, 9].map((decile) => quantileSorted(numbers, decile / 10))),
    ];
    return {
      kind,
      count: values.length,
      missing,
      mean,
      std: Math.sqrt(variance),
      min: numbers[0] ?? 0,
      max: numbers[n - 1] ?? 0,
      edges,
      shares: binShares(numbers, edges),
      sample: evenlySpaced(numbers, SAMPLE_SIZE),
    };
  }
  const counts = new Map<string, number>();
  for (const value of values) {
    if (value === null || value === undefined || value === '') {
      missing++;
      continue;
    }
    const key = String(value);
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  const present = values.length - missing;
  const ranked = [...counts.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  const shares: Record<string, number> = {};
  let other = 0;
  ranked.forEach(([category, count], index) => {
    if (index < MAX_CATEGORIES) shares[category] = present ? count / present : 0;
    else other += count;
  });
  if (other > 0) shares.__other__ = other / present;
  return { kind, count: values.length, missing, shares };
}

/** Shares of values per bin defined by `edges` (length edges.length + 1). */
export function binShares(values: ReadonlyArray<number>, edges: ReadonlyArray<number>): number[] {
  const counts = new Array<number>(edges.length + 1).fill(0);
  for (const value of values) {
    let bin = 0;
    while (bin < edges.length && value > (edges[bin] as number)) bin++;
    counts[bin] = (counts[bin] ?? 0) + 1;
  }
  const total = values.length;
  return counts.map((count) => (total ? count / total : 0));
}

function quantileSorted(sorted: ReadonlyArray<number>, q: number): number {
  if (sorted.length === 0) return 0;
  const position = (sorted.length - 1) * q;
  const lower = Math.floor(position);
  const upper = Math.ceil(position);
  const a = sorted[lower] as number;
  const b = sorted[upper] as number;
  return a + (b - a) * (position - lower);
}

function evenlySpaced(sorted: ReadonlyArray<number>, size: number): number[] {
  if (sorted.length <= size) return [...sorted];
  return Array.from(
    { length: size },
    (_, i) => sorted[Math.floor((i * (sorted.length - 1)) / (size - 1))] as number,
  );
}
