import { describe, expect, it } from 'vitest';
import { Counter, Gauge, Histogram, MetricsRegistry, renderSnapshots } from '../../lib/serving/metrics.ts';

/** One worker's registry with the three kinds of metric. */
function worker(requests: number, latencies: number[], queue: number, uptime: number) {
  const registry = new MetricsRegistry();
  const counter = registry.register(new Counter('kiln_requests_total', 'Requests.', ['route']));
  const histogram = registry.register(
    new Histogram('kiln_latency_seconds', 'Latency.', ['route'], [0.01, 0.1]),
  );
  const queued = registry.register(new Gauge('kiln_queue_rows', 'Queued rows.', []));
  const up = registry.register(new Gauge('kiln_uptime_seconds', 'Uptime.', [], 'max'));
  counter.inc({ route: '/invocations' }, requests);
  for (const l of latencies) histogram.observe({ route: '/invocations' }, l);
  queued.set(undefined, queue);
  up.set(undefined, uptime);
  return registry;
}

describe('Prometheus registry', () => {
  it('renders counters, gauges and cumulative histogram buckets in the exposition format', () => {
    const text = worker(3, [0.005, 0.05, 0.5], 7, 12).render();
    expect(text).toContain(
      '# TYPE kiln_requests_total counter\nkiln_requests_total{route="/invocations"} 3\n',
    );
    expect(text).toContain('kiln_latency_seconds_bucket{route="/invocations",le="0.01"} 1\n');
    expect(text).toContain('kiln_latency_seconds_bucket{route="/invocations",le="0.1"} 2\n');
    expect(text).toContain('kiln_latency_seconds_bucket{route="/invocations",le="+Inf"} 3\n');
    expect(text).toContain('kiln_latency_seconds_count{route="/invocations"} 3\n');
    expect(text).toContain('kiln_queue_rows 7\n');
  });

  it('bound series update the same series as the labelled calls', () => {
    const registry = new MetricsRegistry();
    const counter = registry.register(new Counter('kiln_rows_total', 'Rows.', ['model', 'version']));
    const histogram = registry.register(
      new Histogram('kiln_seconds', 'Latency.', ['route', 'status'], [0.01, 0.1]),
    );
    const rows = counter.bind({ model: 'spam', version: '2' });
    const ok = histogram.bind({ route: '/invocations', status: '200' });
    rows.inc(3);
    rows.inc();
    counter.inc({ model: 'spam', version: '2' }, 2);
    counter.inc({ model: 'spam', version: '1' });
    ok.observe(0.05);
    histogram.observe({ route: '/invocations', status: '200' }, 0.005);
    histogram.observe({ route: '/invocations', status: '400' }, 0.5);
    expect(counter.get({ model: 'spam', version: '2' })).toBe(6);
    const text = registry.render();
    expect(text).toContain('kiln_rows_total{model="spam",version="2"} 6\n');
    expect(text).toContain('kiln_rows_total{model="spam",version="1"} 1\n');
    expect(text).toContain('kiln_seconds_bucket{route="/invocations",status="200",le="0.01"} 1\n');
    expect(text).toContain('kiln_seconds_bucket{route="/invocations",status="200",le="0.1"} 2\n');
    expect(text).toContain('kiln_seconds_count{route="/invocations",status="200"} 2\n');
    expect(text).toContain('kiln_seconds_count{route="/invocations",status="400"} 1\n');
  });

  it('merges worker processes: counters and histograms add up, gauges sum or take the max as declared', () => {
    const a = worker(3, [0.005, 0.05, 0.5], 7, 12);
    const b = worker(2, [0.005, 0.005], 1, 30);
    const text = renderSnapshots([a.snapshot(), b.snapshot()]);
    expect(text).toContain('kiln_requests_total{route="/invocations"} 5\n');
    expect(text).toContain('kiln_latency_seconds_bucket{route="/invocations",le="0.01"} 3\n');
    expect(text).toContain('kiln_latency_seconds_bucket{route="/invocations",le="+Inf"} 5\n');
    const sum = /^kiln_latency_seconds_sum\{route="\/invocations"\} (\S+)$/m.exec(text)?.[1];
    expect(Number(sum)).toBeCloseTo(0.565, 12);
    expect(text).toContain('kiln_queue_rows 8\n');
    expect(text).toContain('kiln_uptime_seconds 30\n');
    // One HELP/TYPE header per family, however many processes report it.
    expect(text.match(/^# TYPE kiln_requests_total counter$/gm)).toHaveLength(1);
    // A series only one worker has is kept as it is.
    const c = new MetricsRegistry();
    c.register(new Counter('kiln_requests_total', 'Requests.', ['route'])).inc({ route: '/ping' });
    expect(renderSnapshots([a.snapshot(), c.snapshot()])).toContain('kiln_requests_total{route="/ping"} 1\n');
  });

  it('escapes label values', () => {
    const registry = new MetricsRegistry();
    registry.register(new Counter('kiln_x_total', 'X.', ['model'])).inc({ model: 'a"b\\c\nd' });
    expect(registry.render()).toContain('kiln_x_total{model="a\\"b\\\\c\\nd"} 1\n');
  });
});
