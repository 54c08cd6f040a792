import { describeError, IntegrityError, NotFoundError } from '../core/errors.ts';
import {
  applyTransformToInputs,
  type FittedTransform,
  type InputColumn,
  type InputValues,
} from '../core/transform.ts';
import { OnnxModel, type ProviderChoice } from '../ml/onnx-model.ts';
import { type BatcherOptions, MicroBatcher } from './batcher.ts';
import type { ServingMetrics } from './metrics.ts';
import type { LoadedModelBundle, ModelSource } from './model-source.ts';

/** Structured log sink; the entry point writes JSON lines, tests pass a silent one. */
export interface ServingLogger {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

/** JSON lines on stderr, one object per event. */
export const jsonLogger: ServingLogger = {
  info: (message, fields) => writeLog('info', message, fields),
  warn: (message, fields) => writeLog('warn', message, fields),
  error: (message, fields) => writeLog('error', message, fields),
};

/** Drops everything; for tests and benchmarks. */
export const silentLogger: ServingLogger = {
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
};

function writeLog(level: string, message: string, fields?: Record<string, unknown>): void {
  process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), level, message, ...fields })}\n`);
}

/**
 * One loaded model version: ONNX session, fitted transform and its own batcher. Requests pin it with
 * `acquire`/`release`, so a reload can swap in a new version while in-flight requests finish on this one.
 */
export class Deployment {
  readonly batcher: MicroBatcher<InputValues>;
  readonly loadedAt = new Date().toISOString();
  readonly inputs: InputColumn[];
  private refs = 0;
  private retired = false;
  private released: Promise<void> | undefined;
  private onReleased: (() => void) | undefined;

  constructor(
    readonly name: string,
    readonly version: string,
    readonly model: OnnxModel,
    readonly transform: FittedTransform,
    batching: BatcherOptions,
  ) {
    this.inputs = transform.inputs;
    // The transform runs per batch, not per request: its per-call setup is then paid once per model call.
    this.batcher = new MicroBatcher((rows) => {
      const { features, nRows } = applyTransformToInputs(transform, rows);
      return model.run(features, nRows);
    }, batching);
  }

  /** Pin this version for one request. */
  acquire(): void {
    this.refs++;
  }

  /** Unpin; the last release of a retired version frees its ONNX session. */
  release(): void {
    this.refs--;
    if (this.retired && this.refs === 0) this.free();
  }

  get inUse(): number {
    return this.refs;
  }

  /** Stop taking new requests; resolves once the in-flight ones are done and the session is freed. */
  retire(): Promise<void> {
    this.retired = true;
    if (this.released === undefined) {
      this.released = new Promise<void>((resolve) => {
        this.onReleased = resolve;
      });
      if (this.refs === 0) this.free();
    }
    return this.released;
  }

  private free(): void {
    const done = this.onReleased;
    this.onReleased = undefined;
    if (done === undefined) return;
    void this.batcher
      .drain()
      .then(() => this.model.release())
      .catch(() => undefined)
      .finally(done);
  }
}

export interface ModelHostOptions {
  source: ModelSource;
  /** Models to serve. @default every name `source.list()` returns */
  models?: string[];
  /** Execution provider choice passed to ONNX Runtime. @default 'auto' */
  provider?: ProviderChoice;
  /** ONNX Runtime threads inside one operator. @default ONNX Runtime's choice */
  intraOpNumThreads?: number;
  batching?: BatcherOptions;
  metrics: ServingMetrics;
  logger: ServingLogger;
}

/** Alias-moved event in the bus's shape (`detail.model`), or just its detail. */
export type AliasMovedEvent =
  | { detailType?: string; detail: { model?: unknown; alias?: unknown; version?: unknown } }
  | { model: string; alias?: string; version?: unknown };

/** Loads, serves and hot-swaps model versions. */
export class ModelHost {
  private readonly deployments = new Map<string, Deployment>();
  private readonly reloading = new Map<string, Promise<ReloadResult>>();
  private readonly pendingReload = new Set<string>();
  private readonly retiring = new Set<Promise<void>>();
  private wanted: string[] = [];
  private closed = false;

  constructor(private readonly options: ModelHostOptions) {}

  /** Load the initial versions of every configured model; fails if any cannot be loaded. */
  async start(): Promise<void> {
    const names = this.options.models ?? (await this.options.source.list());
    if (names.length === 0) throw new NotFoundError('the model source has no models to serve');
    this.wanted = [...names];
    for (const name of names) {
      const bundle = await this.options.source.load(name);
      this.install(await this.open(bundle));
    }
  }

  /** Names of the models being served (loaded or not yet). */
  get names(): string[] {
    return this.wanted;
  }

  /** True once every configured model has a version loaded. */
  get ready(): boolean {
    return this.wanted.length > 0 && this.wanted.every((n) => this.deployments.has(n));
  }

  /** The serving version of `name`; with `version`, only if that is the one loaded. */
  get(name: string, version?: string): Deployment {
    const deployment = this.deployments.get(name);
    if (deployment === undefined) {
      throw new NotFoundError(
        `unknown model ${JSON.stringify(name)}; serving: ${this.wanted.join(', ') || 'none'}`,
      );
    }
    if (version !== undefined && version !== deployment.version) {
      throw new NotFoundError(
        `model ${name} has no loaded version ${JSON.stringify(version)}; serving version ${deployment.version}`,
      );
    }
    return deployment;
  }

  /** Lookup without throwing. */
  find(name: string): Deployment | undefined {
    return this.deployments.get(name);
  }

  /**
   * Bring `name` to `version` (default: the source's current version). Concurrent calls for one model are
   * serialised, and one that arrives mid-reload runs once more afterwards so the last alias move wins.
   */
  async reload(name: string, version?: string): Promise<ReloadResult> {
    const running = this.reloading.get(name);
    if (running !== undefined) {
      if (version === undefined) {
        this.pendingReload.add(name);
        return running;
      }
      await running.catch(() => undefined);
      return this.reload(name, version);
    }
    const attempt = this.doReload(name, version).finally(() => {
      this.reloading.delete(name);
      if (this.pendingReload.delete(name)) void this.reload(name).catch(() => undefined);
    });
    this.reloading.set(name, attempt);
    return attempt;
  }

  /** React to an AliasMoved event: reload the model if its current version changed. */
  async onAliasMoved(event: AliasMovedEvent): Promise<ReloadResult | undefined> {
    const detail = 'detail' in event ? event.detail : event;
    const model = detail.model;
    if (typeof model !== 'string' || !this.wanted.includes(model)) return undefined;
    // The event may be about any alias; the source knows which version the default alias points at now.
    return this.reload(model);
  }

  /**
   * Loads a version next to the serving one without serving it (a canary or shadow challenger, see
   * lib/serving/canary.ts); the caller retires it when done.
   */
  async loadDetached(name: string, version: string): Promise<Deployment> {
    if (!this.wanted.includes(name)) {
      throw new NotFoundError(
        `unknown model ${JSON.stringify(name)}; serving: ${this.wanted.join(', ') || 'none'}`,
      );
    }
    return this.open(await this.options.source.load(name, version));
  }

  /** Poll the source once for every model and reload those whose current version moved. */
  async poll(): Promise<void> {
    await Promise.all(
      this.wanted.map(async (name) => {
        try {
          const current = await this.options.source.current(name);
          if (current !== this.deployments.get(name)?.version) await this.reload(name, current);
        } catch (error) {
          this.options.logger.warn('model poll failed', { model: name, error: describeError(error) });
        }
      }),
    );
  }

  /** Retire every version (in-flight requests finish first). */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([...this.reloading.values()]);
    const all = [...this.deployments.values()];
    this.deployments.clear();
    for (const d of all) this.options.metrics.modelLoaded.remove(loadedLabels(d));
    await Promise.all([...all.map((d) => d.retire()), ...this.retiring]);
  }

  private async doReload(name: string, version: string | undefined): Promise<ReloadResult> {
    const { metrics, logger, source } = this.options;
    const previous = this.deployments.get(name);
    try {
      const target = version ?? (await source.current(name));
      if (previous !== undefined && previous.version === target) {
        return { model: name, version: target, changed: false };
      }
      const deployment = await this.open(await source.load(name, target));
      if (this.closed) {
        await deployment.retire();
        return { model: name, version: deployment.version, changed: false };
      }
      this.install(deployment);
      metrics.reloads.inc({ model: name, outcome: 'success' });
      logger.info('model reloaded', {
        model: name,
        version: deployment.version,
        previous: previous?.version,
      });
      return { model: name, version: deployment.version, previous: previous?.version, changed: true };
    } catch (error) {
      metrics.reloads.inc({ model: name, outcome: 'failure' });
      logger.error('model reload failed; keeping the loaded version', {
        model: name,
        version,
        kept: previous?.version,
        error: describeError(error),
      });
      throw error;
    }
  }

  private async open(bundle: LoadedModelBundle): Promise<Deployment> {
    const { provider, intraOpNumThreads, batching, metrics, logger } = this.options;
    // Names and versions end up in response headers, metric labels and capture keys.
    for (const [what, value] of [
      ['name', bundle.name],
      ['version', bundle.version],
    ] as const) {
      if (!SAFE_LABEL.test(value)) {
        throw new IntegrityError(
          `model ${what} ${JSON.stringify(value)} must match ${SAFE_LABEL} to be served`,
        );
      }
    }
    const model = await OnnxModel.load(bundle.onnx, {
      provider: provider ?? 'auto',
      ...(intraOpNumThreads === undefined ? {} : { intraOpNumThreads }),
    });
    try {
      checkCompatible(bundle, model);
    } catch (error) {
      await model.release();
      throw error;
    }
    const labels = { model: bundle.name, version: bundle.version };
    const deployment = new Deployment(bundle.name, bundle.version, model, bundle.transform, {
      ...batching,
      onBatch: (rows, requests) => {
        metrics.batchRows.observe(labels, rows);
        metrics.batchRequests.observe(labels, requests);
      },
    });
    logger.info('model loaded', {
      model: bundle.name,
      version: bundle.version,
      provider: model.provider,
      providerReason: model.providerReason,
      task: model.task,
      features: model.nFeatures,
      inputs: bundle.transform.inputs.length,
    });
    return deployment;
  }

  private install(deployment: Deployment): void {
    const previous = this.deployments.get(deployment.name);
    this.deployments.set(deployment.name, deployment);
    this.options.metrics.modelLoaded.set(loadedLabels(deployment), 1);
    if (previous !== undefined) {
      this.options.metrics.modelLoaded.remove(loadedLabels(previous));
      const done = previous.retire();
      this.retiring.add(done);
      void done.finally(() => this.retiring.delete(done));
    }
  }
}

export interface ReloadResult {
  model: string;
  version: string;
  previous?: string | undefined;
  changed: boolean;
}

const SAFE_LABEL = /^[A-Za-z0-9][A-Za-z0-9._=@+-]{0,127}$/;

function loadedLabels(d: Deployment) {
  return { model: d.name, version: d.version, provider: d.model.provider };
}

/** The transform must produce exactly the features the model was trained on, in order. */
function checkCompatible(bundle: LoadedModelBundle, model: OnnxModel): void {
  const features = bundle.transform.featureNames;
  if (features.length !== model.nFeatures) {
    throw new IntegrityError(
      `${bundle.name}@${bundle.version}: the transform makes ${features.length} features but the model takes ${model.nFeatures}`,
    );
  }
  const named = model.featureNames.some((f, i) => f !== `f${i}`);
  if (named && features.some((f, i) => f !== model.featureNames[i])) {
    throw new IntegrityError(
      `${bundle.name}@${bundle.version}: the transform's feature names differ from the model's (first difference at ${features.findIndex((f, i) => f !== model.featureNames[i])})`,
    );
  }
  if (bundle.transform.inputs.length === 0) {
    throw new IntegrityError(`${bundle.name}@${bundle.version}: the transform has no input columns`);
  }
}
