import { performance } from 'node:perf_hooks';
import { describeError, ValidationError } from '../core/errors.ts';
import { coerceRowInputs, inputsAsObject } from '../core/transform.ts';
import type { ModelOutput } from '../ml/types.ts';
import type { RequestCapture } from './capture.ts';
import type { Deployment } from './model-host.ts';
import { predictionsOf } from './sagemaker.ts';

/**
 * Traffic routing for safe model updates in the local server: a canary sends a share of one model's
 * requests to a challenger version, a shadow mirrors them to it while the champion answers. Either way both
 * versions' traffic is captured under their own version (so the monitor and late labels see both), and
 * the router keeps what the rollout compares: requests, errors, latency and predictions per version. The
 * decision itself is lib/updates/deploy.ts's.
 */

/** What the server reports about one answered prediction request. */
export interface RequestOutcome {
  /** Version that answered (or was picked before the request failed). */
  version: string;
  status: number;
}

/** What the server reports once a request's rows are scored. */
export interface ScoredRequest {
  deployment: Deployment;
  /** The rows as coerced for this deployment (before its transform). */
  rows: Record<string, unknown>[];
  output: ModelOutput;
  requestId: string;
  /** Epoch ms the request was received (capture time). */
  time: number;
  /** Seconds from receiving the request to its predictions. */
  seconds: number;
}

/** The server's side of a router: asked for every prediction request of its model the client did not pin. */
export interface TrafficRouter {
  /** The version that answers a request; `primary` is the one the server would use. */
  route(primary: Deployment): Deployment;
  /** Called once per answered prediction request. */
  observe(outcome: RequestOutcome): void;
  /** Called after a request's rows were scored (before the response is captured). */
  scored(request: ScoredRequest): void;
}

/** What one version did while the router was attached. */
export interface ArmSnapshot {
  version: string;
  requests: number;
  rows: number;
  /** Answers with status ≥ 400 (a challenger rejecting what the champion accepts counts here). */
  errors: number;
  /** Answers with status ≥ 500. */
  serverErrors: number;
  errorRate: number;
  /** Seconds to predictions: median and 95th percentile (null before any request). */
  latency: { p50: number | null; p95: number | null; samples: number };
  /** Prediction objects (`{label, probabilities}` or `{value}`), the first `maxSamples`. */
  predictions: unknown[];
  /** Request ids answered (or mirrored) by this version, the first `maxSamples`. */
  requestIds: string[];
}

/** Everything the rollout compares. */
export interface RouterSnapshot {
  mode: 'canary' | 'shadow';
  share: number;
  champion: ArmSnapshot;
  challenger: ArmSnapshot;
  /** Shadow only: rows both versions predicted, and on how many they agreed (label, or value within 1 %). */
  agreement: { compared: number; agreed: number } | null;
  /** Shadow requests not mirrored because too many were in flight (the champion is never slowed down). */
  shadowDropped: number;
}

/** Options of {@link CanaryRouter}. */
export interface CanaryRouterOptions {
  champion: Deployment;
  challenger: Deployment;
  mode: 'canary' | 'shadow';
  /** Canary: share of requests the challenger answers; shadow: share mirrored to it. In (0, 1]. */
  share: number;
  /** Challenger requests after which {@link CanaryRouter.baked} resolves. */
  bakeRequests: number;
  /** Where the shadow's answers are captured (the server's capture). @default none */
  capture?: RequestCapture;
  /** Predictions, latencies and request ids kept per version. @default 50000 */
  maxSamples?: number;
  /** Shadow requests in flight beyond which mirroring drops requests. @default 64 */
  maxShadowInFlight?: number;
}

class Arm {
  requests = 0;
  rows = 0;
  errors = 0;
  serverErrors = 0;
  readonly latencies: number[] = [];
  readonly predictions: unknown[] = [];
  readonly requestIds: string[] = [];

  constructor(
    readonly version: string,
    private readonly maxSamples: number,
  ) {}

  answered(status: number): void {
    this.requests++;
    if (status >= 400) this.errors++;
    if (status >= 500) this.serverErrors++;
  }

  predicted(requestId: string, predictions: unknown[], seconds: number): void {
    this.rows += predictions.length;
    if (this.latencies.length < this.maxSamples) this.latencies.push(seconds);
    if (this.requestIds.length < this.maxSamples) this.requestIds.push(requestId);
    for (const prediction of predictions) {
      if (this.predictions.length >= this.maxSamples) break;
      this.predictions.push(prediction);
    }
  }

  snapshot(): ArmSnapshot {
    const sorted = [...this.latencies].sort((a, b) => a - b);
    return {
      version: this.version,
      requests: this.requests,
      rows: this.rows,
      errors: this.errors,
      serverErrors: this.serverErrors,
      errorRate: this.requests > 0 ? this.errors / this.requests : 0,
      latency: { p50: quantile(sorted, 0.5), p95: quantile(sorted, 0.95), samples: sorted.length },
      predictions: [...this.predictions],
      requestIds: [...this.requestIds],
    };
  }
}

/** Splits (canary) or mirrors (shadow) one model's traffic between its champion and a challenger. */
export class CanaryRouter implements TrafficRouter {
  /** Resolves once the challenger answered (canary) or was mirrored (shadow) `bakeRequests` requests. */
  readonly baked: Promise<void>;
  private resolveBaked: () => void = () => undefined;
  private readonly champion: Arm;
  private readonly challenger: Arm;
  private readonly maxShadowInFlight: number;
  private routed = 0;
  private shadowInFlight = 0;
  private shadowDropped = 0;
  private readonly pending = new Set<Promise<void>>();
  private compared = 0;
  private agreed = 0;
  private detached = false;

  constructor(private readonly options: CanaryRouterOptions) {
    if (!(options.share > 0 && options.share <= 1)) {
      throw new ValidationError(`rollout share must be in (0, 1], got ${options.share}`);
    }
    if (!Number.isInteger(options.bakeRequests) || options.bakeRequests < 1) {
      throw new ValidationError(`bakeRequests must be a positive integer, got ${options.bakeRequests}`);
    }
    if (options.champion.name !== options.challenger.name) {
      throw new ValidationError(
        `champion ${options.champion.name} and challenger ${options.challenger.name} are different models`,
      );
    }
    const max = options.maxSamples ?? 50_000;
    this.champion = new Arm(options.champion.version, max);
    this.challenger = new Arm(options.challenger.version, max);
    this.maxShadowInFlight = options.maxShadowInFlight ?? 64;
    this.baked = new Promise((resolve) => {
      this.resolveBaked = resolve;
    });
  }

  get mode(): 'canary' | 'shadow' {
    return this.options.mode;
  }

  route(primary: Deployment): Deployment {
    if (this.detached || this.options.mode !== 'canary') return primary;
    if (primary.version !== this.options.champion.version) return primary;
    // Deterministic weighted round robin: exactly `share` of the requests, evenly spread, no randomness.
    const before = Math.floor(this.routed * this.options.share);
    this.routed++;
    const after = Math.floor(this.routed * this.options.share);
    return after > before ? this.options.challenger : primary;
  }

  observe(outcome: RequestOutcome): void {
    const arm = this.armOf(outcome.version);
    if (!arm) return;
    // A shadow's requests are counted when the mirror finishes; the response status is the champion's.
    if (arm === this.challenger && this.options.mode === 'shadow') return;
    arm.answered(outcome.status);
    if (arm === this.challenger) this.checkBaked();
  }

  scored(request: ScoredRequest): void {
    const arm = this.armOf(request.deployment.version);
    if (!arm) return;
    const predictions = predictionsOf(request.output, request.deployment.model.classes);
    arm.predicted(request.requestId, predictions, request.seconds);
    if (this.options.mode === 'shadow' && arm === this.champion && !this.detached) {
      this.mirror(request, predictions);
    }
  }

  /** What both versions did so far. */
  snapshot(): RouterSnapshot {
    return {
      mode: this.options.mode,
      share: this.options.share,
      champion: this.champion.snapshot(),
      challenger: this.challenger.snapshot(),
      agreement: this.options.mode === 'shadow' ? { compared: this.compared, agreed: this.agreed } : null,
      shadowDropped: this.shadowDropped,
    };
  }

  /** Stop routing and mirroring; resolves when mirrored requests in flight are done. */
  async detach(): Promise<void> {
    this.detached = true;
    await Promise.allSettled([...this.pending]);
  }

  private armOf(version: string): Arm | undefined {
    if (version === this.challenger.version) return this.challenger;
    if (version === this.champion.version) return this.champion;
    return undefined;
  }

  private checkBaked(): void {
    if (this.challenger.requests >= this.options.bakeRequests) this.resolveBaked();
  }

  private mirror(request: ScoredRequest, championPredictions: unknown[]): void {
    // Mirror every request when share is 1, else the same even spread as a canary.
    const before = Math.floor(this.routed * this.options.share);
    this.routed++;
    if (Math.floor(this.routed * this.options.share) === before) return;
    if (this.shadowInFlight >= this.maxShadowInFlight) {
      this.shadowDropped++;
      return;
    }
    const challenger = this.options.challenger;
    const started = performance.now();
    this.shadowInFlight++;
    challenger.acquire();
    const done = (async () => {
      let status = 200;
      try {
        const rows = request.rows.map((row) => coerceRowInputs(challenger.transform, row));
        const output = await challenger.batcher.submit(rows);
        const predictions = predictionsOf(output, challenger.model.classes);
        this.challenger.predicted(request.requestId, predictions, (performance.now() - started) / 1000);
        this.compare(championPredictions, predictions);
        const capture = this.options.capture;
        if (capture?.sample()) {
          capture.record({
            requestId: request.requestId,
            time: new Date(request.time).toISOString(),
            model: challenger.name,
            version: challenger.version,
            inputs: rows.map((row) => inputsAsObject(challenger.transform, row)),
            outputs: predictions,
          });
        }
      } catch (error) {
        status = error instanceof ValidationError ? 400 : 500;
        this.lastShadowError = describeError(error);
      } finally {
        challenger.release();
        this.shadowInFlight--;
        this.challenger.answered(status);
        this.checkBaked();
      }
    })();
    this.pending.add(done);
    void done.finally(() => this.pending.delete(done));
  }

  /** The last error of a mirrored request (shadow), for the rollout record. */
  lastShadowError: string | null = null;

  private compare(champion: unknown[], challenger: unknown[]): void {
    const n = Math.min(champion.length, challenger.length);
    for (let i = 0; i < n; i++) {
      this.compared++;
      if (samePrediction(champion[i], challenger[i])) this.agreed++;
    }
  }
}

function samePrediction(a: unknown, b: unknown): boolean {
  const x = (a ?? {}) as { label?: unknown; value?: unknown };
  const y = (b ?? {}) as { label?: unknown; value?: unknown };
  if (x.label !== undefined || y.label !== undefined) return String(x.label) === String(y.label);
  if (typeof x.value === 'number' && typeof y.value === 'number') {
    return Math.abs(x.value - y.value) <= 0.01 * Math.max(Math.abs(x.value), Math.abs(y.value), 1e-9);
  }
  return false;
}

function quantile(sorted: number[], q: number): number | null {
  if (sorted.length === 0) return null;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[index] ?? null;
}
