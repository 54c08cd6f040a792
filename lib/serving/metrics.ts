/**
 * A small Prometheus registry for the inference server. Hand-written rather than prom-client because it sits
 * on the hot path: observing a sample is a Map lookup on a pre-joined label key and a bucket scan, nothing else.
 */

type Labels = Record<string, string>;

function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function renderLabels(names: readonly string[], values: readonly string[], extra?: string): string {
  const parts: string[] = [];
  for (let i = 0; i < names.length; i++) parts.push(`${names[i]}="${escapeLabelValue(values[i] ?? '')}"`);
  if (extra !== undefined) parts.push(extra);
  return parts.length === 0 ? '' : `{${parts.join(',')}}`;
}

function formatNumber(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Number.POSITIVE_INFINITY) return '+Inf';
  if (value === Number.NEGATIVE_INFINITY) return '-Inf';
  return String(value);
}

/**
 * One metric's series as plain data: what a worker process sends to the primary so that `/metrics` on any
 * worker reports the whole server (see lib/serving/cluster.ts), and what `render` formats.
 */
export interface MetricSnapshot {
  name: string;
  help: string;
  type: 'counter' | 'gauge' | 'histogram';
  labelNames: string[];
  /** Histograms: the bucket bounds, ascending. */
  buckets?: number[];
  /** How the same series from several processes combine: counters and histograms always add up. */
  merge: 'sum' | 'max';
  series: Array<
    { values: string[]; value: number } | { values: string[]; counts: number[]; sum: number; count: number }
  >;
}

/** One series of a snapshot without its label values. */
type SeriesData = { value: number } | { counts: number[]; sum: number; count: number };

interface Metric {
  snapshot(): MetricSnapshot;
}

abstract class LabelledMetric<S> implements Metric {
  protected readonly series = new Map<string, { values: string[]; state: S }>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
  ) {}

  protected abstract initial(): S;

  /** The snapshot every kind of metric shares; `dataOf` turns one series' state into plain data. */
  protected snapshotOf(
    type: MetricSnapshot['type'],
    merge: MetricSnapshot['merge'],
    dataOf: (state: S) => SeriesData,
  ): MetricSnapshot {
    return {
      name: this.name,
      help: this.help,
      type,
      labelNames: [...this.labelNames],
      merge,
      series: [...this.series.values()].map(({ values, state }) => ({ values, ...dataOf(state) })),
    };
  }

  protected stateFor(labels: Labels | undefined): S {
    const key = this.keyOf(labels);
    let entry = this.series.get(key);
    if (entry === undefined) {
      entry = { values: this.labelNames.map((n) => labels?.[n] ?? ''), state: this.initial() };
      this.series.set(key, entry);
    }
    return entry.state;
  }

  /** Forget one labelled series (e.g. a model version that was unloaded). */
  remove(labels: Labels): void {
    this.series.delete(this.keyOf(labels));
  }

  /**
   * The series key: label values joined by \u0001, which cannot appear in the route, model or version names
   * emitted, so the key is unambiguous. Built without intermediate arrays: this runs several times per request.
   */
  private keyOf(labels: Labels | undefined): string {
    let key = '';
    for (const n of this.labelNames) key += `${labels?.[n] ?? ''}\u0001`;
    return key;
  }

  abstract snapshot(): MetricSnapshot;
}

/** A monotonically increasing count. */
export class Counter extends LabelledMetric<{ value: number }> {
  protected initial() {
    return { value: 0 };
  }

  /** Add `by` (default 1) to the series for these labels. */
  inc(labels?: Labels, by = 1): void {
    this.stateFor(labels).value += by;
  }

  /**
   * The series for these labels as a handle, for a caller that updates it on every request: no label key is
   * built per update. A series removed later keeps its handle counting, unreported.
   */
  bind(labels?: Labels): { inc(by?: number): void } {
    const state = this.stateFor(labels);
    return {
      inc: (by = 1) => {
        state.value += by;
      },
    };
  }

  /** Current value, for tests and logs. */
  get(labels?: Labels): number {
    return this.stateFor(labels).value;
  }

  snapshot(): MetricSnapshot {
    return this.snapshotOf('counter', 'sum', (state) => ({ value: state.value }));
  }
}

/** A value that goes up and down. */
export class Gauge extends LabelledMetric<{ value: number }> {
  /** @param merge how several processes' values combine: 'sum' (queue sizes, memory) or 'max' (flags, uptime) */
  constructor(
    name: string,
    help: string,
    labelNames: readonly string[],
    readonly merge: 'sum' | 'max' = 'sum',
  ) {
    super(name, help, labelNames);
  }

  protected initial() {
    return { value: 0 };
  }

  /** Set the series for these labels. */
  set(labels: Labels | undefined, value: number): void {
    this.stateFor(labels).value = value;
  }

  snapshot(): MetricSnapshot {
    return this.snapshotOf('gauge', this.merge, (state) => ({ value: state.value }));
  }
}

interface HistogramState {
  counts: Float64Array;
  sum: number;
  count: number;
}

/** Cumulative-bucket histogram in the Prometheus exposition format. */
export class Histogram extends LabelledMetric<HistogramState> {
  private readonly buckets: number[];

  constructor(name: string, help: string, labelNames: readonly string[], buckets: readonly number[]) {
    super(name, help, labelNames);
    this.buckets = [...buckets].sort((a, b) => a - b);
  }

  protected initial(): HistogramState {
    return { counts: new Float64Array(this.buckets.length), sum: 0, count: 0 };
  }

  /** Record one sample. */
  observe(labels: Labels | undefined, value: number): void {
    this.record(this.stateFor(labels), value);
  }

  /** The series for these labels as a handle (see `Counter.bind`). */
  bind(labels?: Labels): { observe(value: number): void } {
    const state = this.stateFor(labels);
    return { observe: (value) => this.record(state, value) };
  }

  private record(state: HistogramState, value: number): void {
    state.sum += value;
    state.count += 1;
    const buckets = this.buckets;
    for (let i = 0; i < buckets.length; i++) {
      if (value <= (buckets[i] as number)) {
        state.counts[i] = (state.counts[i] ?? 0) + 1;
        return;
      }
    }
  }

  snapshot(): MetricSnapshot {
    return {
      ...this.snapshotOf('histogram', 'sum', (state) => ({
        counts: [...state.counts],
        sum: state.sum,
        count: state.count,
      })),
      buckets: [...this.buckets],
    };
  }
}

/** Holds metrics and renders them as one Prometheus text document. */
export class MetricsRegistry {
  private readonly metrics: Metric[] = [];
  private readonly collectors: Array<() => void> = [];

  /** Register a metric; returns it for chaining. */
  register<M extends Metric>(metric: M): M {
    this.metrics.push(metric);
    return metric;
  }

  /** Run `fn` just before every scrape (for gauges sampled on demand). */
  onCollect(fn: () => void): void {
    this.collectors.push(fn);
  }

  /** Every metric as data, after running the collectors. */
  snapshot(): MetricSnapshot[] {
    for (const fn of this.collectors) fn();
    return this.metrics.map((m) => m.snapshot());
  }

  /** The exposition text (format 0.0.4). */
  render(): string {
    return renderSnapshots([this.snapshot()]);
  }
}

/**
 * Several processes' snapshots of the same registry as one exposition document: a series present in several
 * snapshots is added up (counters, histograms, gauges marked 'sum') or takes the largest value ('max').
 */
export function renderSnapshots(processes: ReadonlyArray<ReadonlyArray<MetricSnapshot>>): string {
  const families = new Map<
    string,
    { meta: MetricSnapshot; series: Map<string, MetricSnapshot['series'][number]> }
  >();
  for (const snapshot of processes) {
    for (const metric of snapshot) {
      let family = families.get(metric.name);
      if (family === undefined) {
        family = { meta: metric, series: new Map() };
        families.set(metric.name, family);
      }
      for (const series of metric.series) {
        const key = series.values.join('\u0001');
        const seen = family.series.get(key);
        family.series.set(
          key,
          seen === undefined ? cloneSeries(series) : combine(seen, series, metric.merge),
        );
      }
    }
  }
  const lines: string[] = [];
  for (const { meta, series } of families.values()) {
    lines.push(`# HELP ${meta.name} ${meta.help}`, `# TYPE ${meta.name} ${meta.type}`);
    for (const s of series.values()) {
      if ('value' in s) {
        lines.push(`${meta.name}${renderLabels(meta.labelNames, s.values)} ${formatNumber(s.value)}`);
        continue;
      }
      const buckets = meta.buckets ?? [];
      let cumulative = 0;
      for (let i = 0; i < buckets.length; i++) {
        cumulative += s.counts[i] ?? 0;
        const le = `le="${formatNumber(buckets[i] as number)}"`;
        lines.push(`${meta.name}_bucket${renderLabels(meta.labelNames, s.values, le)} ${cumulative}`);
      }
      lines.push(`${meta.name}_bucket${renderLabels(meta.labelNames, s.values, 'le="+Inf"')} ${s.count}`);
      lines.push(`${meta.name}_sum${renderLabels(meta.labelNames, s.values)} ${formatNumber(s.sum)}`);
      lines.push(`${meta.name}_count${renderLabels(meta.labelNames, s.values)} ${s.count}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

type SeriesSnapshot = MetricSnapshot['series'][number];

function cloneSeries(series: SeriesSnapshot): SeriesSnapshot {
  return 'value' in series ? { ...series } : { ...series, counts: [...series.counts] };
}

function combine(a: SeriesSnapshot, b: SeriesSnapshot, merge: 'sum' | 'max'): SeriesSnapshot {
  if ('value' in a && 'value' in b) {
    return { values: a.values, value: merge === 'max' ? Math.max(a.value, b.value) : a.value + b.value };
  }
  if (!('value' in a) && !('value' in b)) {
    return {
      values: a.values,
      counts: a.counts.map((c, i) => c + (b.counts[i] ?? 0)),
      sum: a.sum + b.sum,
      count: a.count + b.count,
    };
  }
  return a;
}

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

const LATENCY_BUCKETS = [
  0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
];
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384];

/** The inference server's metrics, created once per server so that several servers in one process stay apart. */
export function createServingMetrics() {
  const registry = new MetricsRegistry();
  const startedAt = Date.now();
  const metrics = {
    registry,
    requestDuration: registry.register(
      new Histogram(
        'kiln_inference_request_duration_seconds',
        'Time from request received to response written, by route, model, version and status code.',
        ['route', 'model', 'version', 'status'],
        LATENCY_BUCKETS,
      ),
    ),
    errors: registry.register(
      new Counter('kiln_inference_errors_total', 'Responses with a 4xx or 5xx status, by route and status.', [
        'route',
        'status',
      ]),
    ),
    rows: registry.register(
      new Counter('kiln_inference_rows_total', 'Rows scored, by model and version.', ['model', 'version']),
    ),
    batchRows: registry.register(
      new Histogram(
        'kiln_inference_batch_rows',
        'Rows per ONNX Runtime call (after micro-batching), by model and version.',
        ['model', 'version'],
        BATCH_BUCKETS,
      ),
    ),
    batchRequests: registry.register(
      new Histogram(
        'kiln_inference_batch_requests',
        'Requests coalesced into one ONNX Runtime call, by model and version.',
        ['model', 'version'],
        BATCH_BUCKETS,
      ),
    ),
    queueRows: registry.register(
      new Gauge('kiln_inference_queue_rows', 'Rows waiting for ONNX Runtime, by model and version.', [
        'model',
        'version',
      ]),
    ),
    modelLoaded: registry.register(
      new Gauge(
        'kiln_inference_model_loaded',
        'Model versions currently serving (1), with their execution provider.',
        ['model', 'version', 'provider'],
        'max',
      ),
    ),
    reloads: registry.register(
      new Counter('kiln_inference_model_reloads_total', 'Model reload attempts, by model and outcome.', [
        'model',
        'outcome',
      ]),
    ),
    captureRecords: registry.register(
      new Counter('kiln_capture_records_total', 'Captured request/response records, by outcome.', [
        'outcome',
      ]),
    ),
    inFlight: registry.register(
      new Gauge('kiln_inference_requests_in_flight', 'Requests received and not yet answered.', []),
    ),
    uptime: registry.register(
      new Gauge('kiln_process_uptime_seconds', 'Seconds since the server started.', [], 'max'),
    ),
    memory: registry.register(
      new Gauge(
        'kiln_process_resident_memory_bytes',
        'Resident set size (of every worker process together).',
        [],
      ),
    ),
  };
  registry.onCollect(() => {
    metrics.uptime.set(undefined, (Date.now() - startedAt) / 1000);
    metrics.memory.set(undefined, process.memoryUsage.rss());
  });
  return metrics;
}

export type ServingMetrics = ReturnType<typeof createServingMetrics>;
