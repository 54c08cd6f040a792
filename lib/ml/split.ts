/** Deterministic 32-bit PRNG (mulberry32); enough for shuffles and subsamples. */
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

export function shuffle(a: Uint32Array, random: () => number): void {
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    const t = a[i] as number;
    a[i] = a[j] as number;
    a[j] = t;
  }
}

/**
 * Seeded split of row indices into train and held-out parts, stratified by class when nClasses > 0
 * (y holds class indices) and a plain shuffle otherwise. The held-out part has ceil(fraction * n) rows,
 * minus any class that has a single row (it stays in train); both parts come back in ascending order.
 */
export function stratifiedSplit(
  y: ArrayLike<number>,
  nClasses: number,
  fraction: number,
  random: () => number,
): { train: Uint32Array; valid: Uint32Array } {
  const n = y.length;
  const nValid = Math.ceil(fraction * n);
  const groups: Uint32Array[] = [];
  if (nClasses === 0) {
    groups.push(Uint32Array.from({ length: n }, (_, i) => i));
  } else {
    const counts = new Uint32Array(nClasses);
    for (let i = 0; i < n; i++) counts[y[i] as number] = (counts[y[i] as number] as number) + 1;
    const fill = new Uint32Array(nClasses);
    for (let k = 0; k < nClasses; k++) groups.push(new Uint32Array(counts[k] as number));
    for (let i = 0; i < n; i++) {
      const k = y[i] as number;
      (groups[k] as Uint32Array)[fill[k] as number] = i;
      fill[k] = (fill[k] as number) + 1;
    }
  }
  // Largest-remainder allocation keeps class proportions and the exact validation size.
  const exact = groups.map((g) => (g.length * nValid) / n);
  const take = exact.map((e) => Math.floor(e));
  let remaining = nValid - take.reduce((s, t) => s + t, 0);
  const order = exact
    .map((e, k) => ({ k, frac: e - Math.floor(e) }))
    .sort((a, b) => b.frac - a.frac || a.k - b.k);
  for (const { k } of order) {
    if (remaining <= 0) break;
    take[k] = (take[k] as number) + 1;
    remaining--;
  }
  const train: number[] = [];
  const valid: number[] = [];
  groups.forEach((g, k) => {
    shuffle(g, random);
    const t = Math.min(take[k] as number, Math.max(g.length - 1, 0));
    for (let i = 0; i < g.length; i++) (i < t ? valid : train).push(g[i] as number);
  });
  train.sort((a, b) => a - b);
  valid.sort((a, b) => a - b);
  return { train: Uint32Array.from(train), valid: Uint32Array.from(valid) };
}

/** Hold out `fraction` of the rows, stratified for classification; deterministic for a seed. */
export function holdoutSplit(
  y: ArrayLike<number>,
  nClasses: number,
  fraction: number,
  seed: number,
): { train: Uint32Array; test: Uint32Array } {
  const { train, valid } = stratifiedSplit(y, nClasses, fraction, rng(seed));
  return { train, test: valid };
}
