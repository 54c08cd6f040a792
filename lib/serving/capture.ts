import { randomUUID } from 'node:crypto';
import { describeError } from '../core/errors.ts';
import type { ObjectStore } from '../store/object-store.ts';

/** Where capture files go: the lake's ObjectStore in production, anything with `write` in tests. */
export interface CaptureSink {
  write(key: string, body: string): Promise<void>;
}

/** One captured request: the rows the model saw (coerced, before the transform) and what it answered. */
export interface CaptureRecord {
  requestId: string;
  /** ISO-8601 UTC time the request was received. */
  time: string;
  model: string;
  version: string;
  inputs: unknown[];
  outputs: unknown[];
}

export interface CaptureOptions {
  sink: CaptureSink;
  /** Fraction of requests captured, 0..1. @default 1 */
  sampleRate?: number;
  /** Flush a partition once it holds this many records. @default 1000 */
  maxRecords?: number;
  /** Flush a partition once its records reach roughly this many bytes of JSON. @default 4 MiB */
  maxBytes?: number;
  /** Flush everything at least this often. @default 5000 */
  flushIntervalMs?: number;
  /** Records held in memory (buffered or being written) beyond which new ones are dropped. @default 20000 */
  maxPendingRecords?: number;
  /** Key prefix inside the sink. @default 'capture' */
  prefix?: string;
  /** Where write failures are reported; capture never throws into the request path. */
  onError?: (error: unknown, key: string) => void;
  /** Counts records by outcome: captured, written, dropped, failed. */
  onRecord?: (outcome: 'captured' | 'written' | 'dropped' | 'failed', n: number) => void;
  /** Random source in [0, 1), injectable for tests. */
  random?: () => number;
}

interface Partition {
  model: string;
  version: string;
  hour: string;
  lines: string[];
  bytes: number;
}

const pad = (n: number) => String(n).padStart(2, '0');

/** `capture/<model>/<version>/<yyyy>/<mm>/<dd>/<hh>/<uuid>.jsonl` for a record time (UTC). */
export function captureKey(
  prefix: string,
  model: string,
  version: string,
  time: Date,
  id: string = randomUUID(),
): string {
  const hour = `${time.getUTCFullYear()}/${pad(time.getUTCMonth() + 1)}/${pad(time.getUTCDate())}/${pad(time.getUTCHours())}`;
  return `${prefix}/${model}/${version}/${hour}/${id}.jsonl`;
}

/**
 * Sampled request/response capture, buffered per model version and UTC hour and written as JSON Lines.
 * Everything here is best effort by design: a slow or failing sink costs dropped records, never a
 * slower or failed inference response.
 */
export class RequestCapture {
  readonly sampleRate: number;
  private readonly sink: CaptureSink;
  private readonly maxRecords: number;
  private readonly maxBytes: number;
  private readonly maxPendingRecords: number;
  private readonly prefix: string;
  private readonly onError: (error: unknown, key: string) => void;
  private readonly onRecord: (outcome: 'captured' | 'written' | 'dropped' | 'failed', n: number) => void;
  private readonly random: () => number;
  private readonly partitions = new Map<string, Partition>();
  private readonly inFlight = new Set<Promise<void>>();
  private pendingRecords = 0;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(options: CaptureOptions) {
    const rate = options.sampleRate ?? 1;
    if (!Number.isFinite(rate) || rate < 0 || rate > 1) {
      throw new RangeError(`capture sampleRate must be between 0 and 1, got ${rate}`);
    }
    this.sampleRate = rate;
    this.sink = options.sink;
    this.maxRecords = options.maxRecords ?? 1000;
    this.maxBytes = options.maxBytes ?? 4 * 1024 * 1024;
    this.maxPendingRecords = options.maxPendingRecords ?? 20_000;
    this.prefix = options.prefix ?? 'capture';
    this.onError = options.onError ?? (() => undefined);
    this.onRecord = options.onRecord ?? (() => undefined);
    this.random = options.random ?? Math.random;
    const interval = options.flushIntervalMs ?? 5000;
    if (interval > 0) {
      this.timer = setInterval(() => void this.flush(), interval);
      this.timer.unref();
    }
  }

  /** Decide per request whether to capture it (call before building the record, which is not free). */
  sample(): boolean {
    return !this.closed && this.sampleRate > 0 && (this.sampleRate >= 1 || this.random() < this.sampleRate);
  }

  /** Buffer one record; never throws. */
  record(record: CaptureRecord): void {
    try {
      if (this.closed) return;
      if (this.pendingRecords >= this.maxPendingRecords) {
        this.onRecord('dropped', 1);
        return;
      }
      const time = new Date(record.time);
      const hour = `${time.getUTCFullYear()}${pad(time.getUTCMonth() + 1)}${pad(time.getUTCDate())}${pad(time.getUTCHours())}`;
      const id = `${record.model}\u0001${record.version}\u0001${hour}`;
      let partition = this.partitions.get(id);
      if (partition === undefined) {
        partition = { model: record.model, version: record.version, hour: record.time, lines: [], bytes: 0 };
        this.partitions.set(id, partition);
      }
      const line = JSON.stringify(record);
      partition.lines.push(line);
      partition.bytes += line.length + 1;
      this.pendingRecords++;
      this.onRecord('captured', 1);
      if (partition.lines.length >= this.maxRecords || partition.bytes >= this.maxBytes) {
        this.partitions.delete(id);
        this.write(partition);
      }
    } catch (error) {
      this.onRecord('dropped', 1);
      this.onError(error, '');
    }
  }

  /** Write every buffered partition and wait for all writes in progress. */
  async flush(): Promise<void> {
    const partitions = [...this.partitions.values()];
    this.partitions.clear();
    for (const p of partitions) this.write(p);
    await Promise.allSettled([...this.inFlight]);
  }

  /** Flush, then stop the timer and accept no more records. */
  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
    if (this.timer !== undefined) clearInterval(this.timer);
  }

  private write(partition: Partition): void {
    if (partition.lines.length === 0) return;
    const n = partition.lines.length;
    const key = captureKey(this.prefix, partition.model, partition.version, new Date(partition.hour));
    const body = `${partition.lines.join('\n')}\n`;
    const done = (async () => {
      try {
        await this.sink.write(key, body);
        this.onRecord('written', n);
      } catch (error) {
        this.onRecord('failed', n);
        this.onError(error, key);
      } finally {
        this.pendingRecords -= n;
      }
    })();
    this.inFlight.add(done);
    void done.finally(() => this.inFlight.delete(done));
  }
}

/** A capture sink on the lake (S3 or a local folder), one object per flushed partition. */
export function objectStoreCaptureSink(store: ObjectStore): CaptureSink {
  return {
    async write(key, body) {
      await store.put(key, body, { contentType: 'application/x-ndjson' });
    },
  };
}

/** Formats a capture failure for the log without the payload. */
export function describeCaptureError(error: unknown, key: string): string {
  return `capture write${key ? ` to ${key}` : ''} failed: ${describeError(error)}`;
}
