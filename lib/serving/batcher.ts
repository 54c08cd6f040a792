import { KilnError, ValidationError } from '../core/errors.ts';
import type { ModelOutput } from '../ml/types.ts';

/** Scores a batch of rows (of any representation) and returns one output row per input row, in order. */
export type BatchRunner<R> = (rows: R[]) => Promise<ModelOutput>;

export interface BatcherOptions {
  /** Rows per model call; requests are coalesced up to this many rows. A larger single request runs alone. @default 64 */
  maxBatchSize?: number;
  /**
   * Under heavy load (the previous call carried at least half of `maxBatchSize`), how long queued requests may
   * be held once the model frees up, for as long as more keep arriving, so that the next batch fills. An idle
   * or lightly loaded model never holds a request. 0 dispatches whatever is queued as soon as the model is free. @default 2
   */
  maxWaitMs?: number;
  /** Rows allowed to wait; beyond this `submit` rejects with `OverloadedError` (HTTP 503). @default 16384 */
  maxQueueRows?: number;
  /** `false` sends every request to the model on its own, as it arrives. @default true */
  enabled?: boolean;
  /** Called once per model call with the rows and requests it carried. */
  onBatch?: (rows: number, requests: number) => void;
}

/** The server has more work queued than it accepts; the client should retry later. */
export class OverloadedError extends KilnError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'Overloaded', options);
  }
}

interface Job<R> {
  rows: R[];
  enqueuedAt: number;
  resolve: (output: ModelOutput) => void;
  reject: (error: unknown) => void;
}

/** Copies rows [start, start + n) of a batch output into an output of its own. */
export function sliceOutput(output: ModelOutput, start: number, n: number): ModelOutput {
  const part: ModelOutput = { task: output.task, nRows: n };
  if (output.values !== undefined) part.values = output.values.subarray(start, start + n);
  if (output.labels !== undefined) part.labels = output.labels.subarray(start, start + n);
  if (output.probabilities !== undefined) {
    const width = output.nRows === 0 ? 0 : output.probabilities.length / output.nRows;
    part.probabilities = output.probabilities.subarray(start * width, (start + n) * width);
  }
  return part;
}

/**
 * Dynamic micro-batching for one model version. ONNX Runtime's Node binding runs a session synchronously
 * on the main thread, so one call at a time is all the parallelism there is; coalescing concurrent requests
 * into that call amortises its fixed cost (and the transform's per-call setup, since the runner transforms
 * the whole batch). Requests that arrive while the model is idle are dispatched on the next turn of the
 * event loop (which already gathers every request parsed in the same I/O phase), so a lone request pays no
 * batching delay. If a coalesced batch fails validation, each request is retried alone so that one bad
 * request cannot fail its neighbours.
 */
export class MicroBatcher<R> {
  private readonly maxBatchSize: number;
  private readonly maxWaitMs: number;
  private readonly maxQueueRows: number;
  private readonly enabled: boolean;
  private readonly onBatch: ((rows: number, requests: number) => void) | undefined;
  private queue: Job<R>[] = [];
  private queuedRows = 0;
  private running = 0;
  private scheduled = false;
  /** True until a batch is dispatched, and again once the model goes idle with nothing queued. */
  private coldStart = true;
  /** Rows in the most recent model call; a measure of load that needs no clock. */
  private lastBatchRows = 0;
  private holding = false;
  private idleWaiters: Array<() => void> = [];

  constructor(
    private readonly run: BatchRunner<R>,
    options: BatcherOptions = {},
  ) {
    this.maxBatchSize = options.maxBatchSize ?? 64;
    this.maxWaitMs = options.maxWaitMs ?? 2;
    this.maxQueueRows = options.maxQueueRows ?? 16_384;
    this.enabled = options.enabled ?? true;
    this.onBatch = options.onBatch;
    if (!Number.isInteger(this.maxBatchSize) || this.maxBatchSize < 1) {
      throw new RangeError(`maxBatchSize must be an integer >= 1, got ${this.maxBatchSize}`);
    }
    if (!Number.isFinite(this.maxWaitMs) || this.maxWaitMs < 0) {
      throw new RangeError(`maxWaitMs must be a finite number >= 0, got ${this.maxWaitMs}`);
    }
    if (!Number.isInteger(this.maxQueueRows) || this.maxQueueRows < 1) {
      throw new RangeError(`maxQueueRows must be an integer >= 1, got ${this.maxQueueRows}`);
    }
  }

  /** Rows waiting for the model right now. */
  get pendingRows(): number {
    return this.queuedRows;
  }

  /** Calls in progress plus queued requests; 0 means idle. */
  get load(): number {
    return this.running + this.queue.length;
  }

  /** Score one request's rows; resolves with this request's slice of the batch output. */
  submit(rows: R[]): Promise<ModelOutput> {
    const nRows = rows.length;
    if (this.queuedRows + nRows > this.maxQueueRows && this.queuedRows > 0) {
      return Promise.reject(
        new OverloadedError(
          `${this.queuedRows} rows already queued (limit ${this.maxQueueRows}); retry later`,
        ),
      );
    }
    if (!this.enabled) {
      this.running++;
      this.onBatch?.(nRows, 1);
      let result: Promise<ModelOutput>;
      try {
        result = this.run(rows);
      } catch (error) {
        // A runner that throws before returning its promise must not leave `running` counted forever.
        result = Promise.reject(error);
      }
      return result.finally(() => {
        this.running--;
        this.notifyIfIdle();
      });
    }
    return new Promise<ModelOutput>((resolve, reject) => {
      this.queue.push({ rows, enqueuedAt: performance.now(), resolve, reject });
      this.queuedRows += nRows;
      this.schedule();
    });
  }

  /** Resolves once nothing is queued or running (used before releasing the model). */
  drain(): Promise<void> {
    if (this.load === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private schedule(): void {
    if (this.running > 0 || this.scheduled || this.holding || this.queue.length === 0) return;
    if (this.queuedRows >= this.maxBatchSize || this.holdExpired()) {
      this.scheduled = true;
      setImmediate(() => this.dispatch());
      return;
    }
    this.holding = true;
    this.hold(this.queue.length);
  }

  /**
   * Hold the batch one event-loop turn at a time for as long as requests keep arriving (each turn polls the
   * sockets), up to `maxWaitMs`. A turn that brings nothing ends the hold: waiting on a timer would leave the
   * thread idle while clients that are themselves waiting for an answer cannot add anything to the batch.
   */
  private hold(seen: number): void {
    setImmediate(() => {
      if (this.queue.length > seen && this.queuedRows < this.maxBatchSize && !this.holdExpired()) {
        this.hold(this.queue.length);
        return;
      }
      this.holding = false;
      this.scheduled = true;
      this.dispatch();
    });
  }

  /**
   * A queue that formed while the model was idle goes out at once, and so does one behind a small batch: only
   * when batches are coming out at least half full does holding buy more than the latency it costs.
   */
  private holdExpired(): boolean {
    const oldest = this.queue[0];
    return (
      this.coldStart ||
      this.maxWaitMs === 0 ||
      this.lastBatchRows * 2 < this.maxBatchSize ||
      oldest === undefined ||
      performance.now() - oldest.enqueuedAt >= this.maxWaitMs
    );
  }

  private dispatch(): void {
    this.scheduled = false;
    if (this.queue.length === 0 || this.running > 0) return;
    const jobs: Job<R>[] = [];
    let rows = 0;
    while (this.queue.length > 0) {
      const next = this.queue[0] as Job<R>;
      if (jobs.length > 0 && rows + next.rows.length > this.maxBatchSize) break;
      this.queue.shift();
      jobs.push(next);
      rows += next.rows.length;
    }
    this.queuedRows -= rows;
    this.lastBatchRows = rows;
    this.running++;
    this.coldStart = false;
    void this.execute(jobs, rows).finally(() => {
      this.running--;
      // Work that queued up during the call forms the next batch; if nothing did, the next request is cold.
      if (this.queue.length === 0) this.coldStart = true;
      this.schedule();
      this.notifyIfIdle();
    });
  }

  private async execute(jobs: Job<R>[], rows: number): Promise<void> {
    this.onBatch?.(rows, jobs.length);
    const first = jobs[0];
    if (jobs.length === 1 && first !== undefined) {
      try {
        first.resolve(await this.run(first.rows));
      } catch (error) {
        first.reject(error);
      }
      return;
    }
    const all: R[] = [];
    for (const job of jobs) for (const row of job.rows) all.push(row);
    let output: ModelOutput;
    try {
      output = await this.run(all);
    } catch (error) {
      if (!(error instanceof ValidationError)) {
        for (const job of jobs) job.reject(error);
        return;
      }
      for (const job of jobs) {
        try {
          job.resolve(await this.run(job.rows));
        } catch (jobError) {
          job.reject(jobError);
        }
      }
      return;
    }
    let start = 0;
    for (const job of jobs) {
      job.resolve(sliceOutput(output, start, job.rows.length));
      start += job.rows.length;
    }
  }

  private notifyIfIdle(): void {
    if (this.load !== 0 || this.idleWaiters.length === 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }
}
