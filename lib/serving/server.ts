import { randomUUID } from 'node:crypto';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { describeError, KilnError, NotFoundError, ValidationError } from '../core/errors.ts';
import { coerceRowInputs, type InputValues, inputsAsObject } from '../core/transform.ts';
import type { ProviderChoice } from '../ml/onnx-model.ts';
import type { ModelOutput } from '../ml/types.ts';
import type { ObjectStore } from '../store/object-store.ts';
import type { BatcherOptions } from './batcher.ts';
import type { TrafficRouter } from './canary.ts';
import { type CaptureSink, describeCaptureError, objectStoreCaptureSink, RequestCapture } from './capture.ts';
import {
  httpStatusOf,
  MethodNotAllowedError,
  PayloadTooLargeError,
  UnavailableError,
  UnsupportedMediaTypeError,
} from './errors.ts';
import { createServingMetrics, PROMETHEUS_CONTENT_TYPE, type ServingMetrics } from './metrics.ts';
import {
  type AliasMovedEvent,
  type Deployment,
  jsonLogger,
  ModelHost,
  type ReloadResult,
  type ServingLogger,
} from './model-host.ts';
import type { ModelSource } from './model-source.ts';
import { inferOutputs, modelMetadata, outputNames, parseInferRequest } from './oip.ts';
import {
  mediaType,
  negotiate,
  parseInvocationBody,
  predictionsCsv,
  predictionsJsonOf,
  predictionsOf,
  type RawRow,
} from './sagemaker.ts';

export interface ServerLimits {
  /** Largest request body; SageMaker's own limit for real-time endpoints. @default 6 MiB */
  maxBodyBytes?: number;
  /** Most rows in one request (413 above). @default 10000 */
  maxRowsPerRequest?: number;
  /** Time allowed to receive a request's headers (slow-loris guard). @default 10000 */
  headersTimeoutMs?: number;
  /** Time allowed to receive a whole request. @default 60000 */
  requestTimeoutMs?: number;
  /** Idle time before a keep-alive connection is closed. @default 5000 */
  keepAliveTimeoutMs?: number;
  /** How often Node checks the two timeouts above. @default 1000 */
  connectionsCheckingIntervalMs?: number;
  /** Largest request header block. @default 16384 */
  maxHeaderBytes?: number;
  /** On close, how long in-flight requests may take before connections are cut. @default 25000 */
  shutdownGraceMs?: number;
  /**
   * On close, how long the server must have been without requests before the remaining (idle) connections are
   * cut, so that requests already on the wire are still answered. @default 100
   */
  shutdownQuietMs?: number;
}

export interface CaptureConfig {
  /** Where capture files go; give this or `store`. */
  sink?: CaptureSink;
  /** The lake: capture files are put under `capture/` in it. */
  store?: ObjectStore;
  /** Fraction of requests captured. @default 1 */
  sampleRate?: number;
  maxRecords?: number;
  maxBytes?: number;
  flushIntervalMs?: number;
  prefix?: string;
}

export interface InferenceServerOptions {
  /** Where models come from (registry, SageMaker model directory, memory). */
  source: ModelSource;
  /** Models to load. @default every model the source lists */
  models?: string[];
  /** Model for requests that name none. @default the only model, if there is exactly one */
  defaultModel?: string;
  /** ONNX Runtime execution provider. @default 'auto' (CUDA when usable, else CPU) */
  provider?: ProviderChoice;
  /**
   * ONNX Runtime intra-op threads. Micro-batches are small and run on the main thread, where a spinning
   * thread pool only competes with the event loop; raise it for big models on big machines. @default 1
   */
  intraOpNumThreads?: number;
  /** Micro-batching; `{ enabled: false }` scores each request on its own. */
  batching?: Omit<BatcherOptions, 'onBatch'>;
  /** Request/response capture; off when absent. */
  capture?: CaptureConfig;
  limits?: ServerLimits;
  /** Poll `source.current` this often and reload moved models; 0 = never. @default 0 */
  pollIntervalMs?: number;
  logger?: ServingLogger;
  /**
   * `/metrics` text for a server made of several worker processes (lib/serving/cluster.ts).
   * @default this process's own metrics
   */
  clusterMetrics?: () => Promise<string>;
  /** Reported by `GET /v2`. */
  serverName?: string;
  serverVersion?: string;
}

export interface InferenceServer {
  readonly server: http.Server;
  readonly models: ModelHost;
  readonly metrics: ServingMetrics;
  readonly capture: RequestCapture | undefined;
  /** Requests received and not yet answered. */
  readonly activeRequests: number;
  /** Bind, then load the models (ping answers 503 meanwhile); resolves with the address once ready. */
  listen(port: number, host?: string): Promise<AddressInfo>;
  /** Swap `name` to `version` (default: the source's current) without dropping in-flight requests. */
  reload(name: string, version?: string): Promise<ReloadResult>;
  /** Handler for the bus's AliasMoved event. */
  onAliasMoved(event: AliasMovedEvent): Promise<ReloadResult | undefined>;
  /** Attach (or with undefined, detach) a canary or shadow router to one model (lib/serving/canary.ts). */
  setRouter(model: string, router: TrafficRouter | undefined): void;
  /** Stop accepting, finish in-flight requests, flush capture, release models. */
  close(): Promise<void>;
}

const JSON_TYPE = 'application/json';
/** Routes whose requests a canary or shadow router sees. */
const PREDICTION_ROUTES = new Set(['/invocations', '/v2/models/:name/infer']);

/** The metric series a successful `/invocations` updates, bound once per model version. */
interface InvocationSeries {
  duration: { observe(seconds: number): void };
  rows: { inc(by?: number): void };
}

interface Ctx {
  req: http.IncomingMessage;
  res: http.ServerResponse;
  id: string;
  start: number;
  route: string;
  model: string;
  version: string;
  /** Set once `/invocations` knows its model version; a 200 answer then observes its duration here. */
  series: InvocationSeries | undefined;
}

/** Creates the inference server: SageMaker hosting contract plus Open Inference Protocol V2 on node:http. */
export function createInferenceServer(options: InferenceServerOptions): InferenceServer {
  const logger = options.logger ?? jsonLogger;
  const metrics = createServingMetrics();
  const limits = {
    maxBodyBytes: options.limits?.maxBodyBytes ?? 6 * 1024 * 1024,
    maxRowsPerRequest: options.limits?.maxRowsPerRequest ?? 10_000,
    headersTimeoutMs: options.limits?.headersTimeoutMs ?? 10_000,
    requestTimeoutMs: options.limits?.requestTimeoutMs ?? 60_000,
    keepAliveTimeoutMs: options.limits?.keepAliveTimeoutMs ?? 5_000,
    connectionsCheckingIntervalMs: options.limits?.connectionsCheckingIntervalMs ?? 1_000,
    maxHeaderBytes: options.limits?.maxHeaderBytes ?? 16_384,
    shutdownGraceMs: options.limits?.shutdownGraceMs ?? 25_000,
    shutdownQuietMs: options.limits?.shutdownQuietMs ?? 100,
  };
  const host = new ModelHost({
    source: options.source,
    ...(options.models === undefined ? {} : { models: options.models }),
    ...(options.provider === undefined ? {} : { provider: options.provider }),
    intraOpNumThreads: options.intraOpNumThreads ?? 1,
    batching: options.batching ?? {},
    metrics,
    logger,
  });
  const capture =
    options.capture === undefined
      ? undefined
      : new RequestCapture({
          ...options.capture,
          sink: captureSinkOf(options.capture),
          onError: (error, key) => logger.warn(describeCaptureError(error, key)),
          onRecord: (outcome, n) => metrics.captureRecords.inc({ outcome }, n),
        });
  metrics.registry.onCollect(() => metrics.inFlight.set(undefined, inFlight));
  const serverName = options.serverName ?? 'kiln-inference';
  const serverVersion = options.serverVersion ?? '0.1.0';
  let inFlight = 0;
  let closing = false;
  let lastActivity = 0;
  // Canary / shadow routers by model; the hot path pays one Map lookup when none is attached.
  const routers = new Map<string, TrafficRouter>();
  // A labelled metric update builds and hashes a label key; the hottest path would do that twice per request,
  // so its series are looked up once per model version instead.
  const invocationSeries = new WeakMap<Deployment, InvocationSeries>();
  function invocationSeriesOf(deployment: Deployment): InvocationSeries {
    let series = invocationSeries.get(deployment);
    if (series === undefined) {
      const { name: model, version } = deployment;
      series = {
        duration: metrics.requestDuration.bind({ route: '/invocations', model, version, status: '200' }),
        rows: metrics.rows.bind({ model, version }),
      };
      invocationSeries.set(deployment, series);
    }
    return series;
  }

  const server = http.createServer({
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    connectionsCheckingInterval: limits.connectionsCheckingIntervalMs,
    maxHeaderSize: limits.maxHeaderBytes,
  });

  // ---- responses -------------------------------------------------------------------------------------

  function finish(
    ctx: Ctx,
    status: number,
    body: string,
    contentType: string,
    extra?: http.OutgoingHttpHeaders,
  ): void {
    const { res } = ctx;
    if (!res.headersSent && !res.destroyed) {
      const length = Buffer.byteLength(body);
      // Written as whole literals: one object shape per case instead of one per header added.
      const headers: http.OutgoingHttpHeaders =
        ctx.version === ''
          ? { 'content-type': contentType, 'content-length': length, 'x-kiln-request-id': ctx.id }
          : {
              'content-type': contentType,
              'content-length': length,
              'x-kiln-request-id': ctx.id,
              'x-kiln-model': ctx.model,
              'x-kiln-model-version': ctx.version,
            };
      if (extra !== undefined) Object.assign(headers, extra);
      if (closing) headers.connection = 'close';
      res.writeHead(status, headers);
      res.end(body);
    }
    const seconds = (performance.now() - ctx.start) / 1000;
    if (status === 200 && ctx.series !== undefined) ctx.series.duration.observe(seconds);
    else {
      metrics.requestDuration.observe(
        { route: ctx.route, model: ctx.model, version: ctx.version, status: String(status) },
        seconds,
      );
    }
    if (status >= 400) metrics.errors.inc({ route: ctx.route, status: String(status) });
    if (ctx.version !== '' && routers.size > 0 && PREDICTION_ROUTES.has(ctx.route)) {
      routers.get(ctx.model)?.observe({ version: ctx.version, status });
    }
  }

  function sendJson(ctx: Ctx, status: number, value: unknown, extra?: http.OutgoingHttpHeaders): void {
    finish(ctx, status, JSON.stringify(value), JSON_TYPE, extra);
  }

  function fail(ctx: Ctx, error: unknown): void {
    const { status, expose } = httpStatusOf(error);
    const extra: http.OutgoingHttpHeaders = {};
    if (error instanceof MethodNotAllowedError) extra.allow = error.allow;
    if (status === 503) extra['retry-after'] = '1';
    if (error instanceof PayloadTooLargeError) extra.connection = 'close';
    let message: string;
    if (expose) {
      message = describeError(error);
      if (status >= 500)
        logger.warn('request refused', { requestId: ctx.id, route: ctx.route, status, error: message });
    } else {
      logger.error('request failed', {
        requestId: ctx.id,
        route: ctx.route,
        model: ctx.model,
        error: error instanceof Error ? (error.stack ?? error.message) : String(error),
      });
      message = `internal error; quote request id ${ctx.id}`;
    }
    sendJson(ctx, status, { error: message }, extra);
  }

  // ---- body ------------------------------------------------------------------------------------------

  function readBody(ctx: Ctx): Promise<Buffer> {
    const { req } = ctx;
    const declared = req.headers['content-length'];
    if (declared !== undefined && Number(declared) > limits.maxBodyBytes) {
      return Promise.reject(
        new PayloadTooLargeError(
          `request body of ${declared} bytes is over the ${limits.maxBodyBytes}-byte limit`,
        ),
      );
    }
    return new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let done = false;
      req.on('data', (chunk: Buffer) => {
        if (done) return;
        size += chunk.length;
        if (size > limits.maxBodyBytes) {
          done = true;
          reject(new PayloadTooLargeError(`request body is over the ${limits.maxBodyBytes}-byte limit`));
          return;
        }
        chunks.push(chunk);
      });
      req.on('end', () => {
        if (done) return;
        done = true;
        resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size));
      });
      req.on('error', (error) => {
        if (done) return;
        done = true;
        reject(new ClientGoneError('the client went away while sending the body', { cause: error }));
      });
    });
  }

  // ---- models ----------------------------------------------------------------------------------------

  function pick(name: string | undefined, version?: string): Deployment {
    if (name === undefined || name === '') {
      if (!host.ready) throw new UnavailableError('models are still loading');
      const fallback = options.defaultModel ?? (host.names.length === 1 ? host.names[0] : undefined);
      if (fallback === undefined) {
        throw new ValidationError(
          `this server hosts several models (${host.names.join(', ')}); name one with the X-Amzn-SageMaker-Target-Model header or ?model=`,
        );
      }
      return host.get(fallback, version);
    }
    if (host.find(name) === undefined && host.names.includes(name)) {
      throw new UnavailableError(`model ${name} is still loading`);
    }
    return host.get(name, version);
  }

  function toRows(deployment: Deployment, raw: ReadonlyArray<RawRow>): InputValues[] {
    const out: InputValues[] = new Array(raw.length);
    for (let i = 0; i < raw.length; i++) {
      try {
        out[i] = coerceRowInputs(deployment.transform, raw[i] as RawRow);
      } catch (error) {
        if (error instanceof ValidationError) {
          throw new ValidationError(`${raw.length > 1 ? `row ${i}: ` : ''}${error.message}`, {
            cause: error,
          });
        }
        throw error;
      }
    }
    return out;
  }

  /** A client that names a version gets that version; the rest may be routed to a challenger. */
  function routed(deployment: Deployment, pinned: string | undefined): Deployment {
    if (pinned !== undefined || routers.size === 0) return deployment;
    return routers.get(deployment.name)?.route(deployment) ?? deployment;
  }

  /**
   * After a request was answered: capture it (if sampled) and tell its model's traffic router (if any). Both
   * keep rows as objects by column name; they are built once, and only when one of the two wants them.
   */
  function afterScoring(
    ctx: Ctx,
    deployment: Deployment,
    rows: InputValues[],
    output: ModelOutput,
    time: number,
    seconds: number,
  ): void {
    const sampled = capture?.sample() ? capture : undefined;
    const router = routers.size === 0 ? undefined : routers.get(deployment.name);
    if (sampled === undefined && router === undefined) return;
    const objects = rows.map((row) => inputsAsObject(deployment.transform, row));
    if (sampled !== undefined) {
      try {
        sampled.record({
          requestId: ctx.id,
          time: new Date(time).toISOString(),
          model: deployment.name,
          version: deployment.version,
          inputs: objects,
          outputs: predictionsOf(output, deployment.model.classes),
        });
      } catch (error) {
        logger.warn(describeCaptureError(error, ''));
      }
    }
    if (router !== undefined) {
      try {
        router.scored({ deployment, rows: objects, output, requestId: ctx.id, time, seconds });
      } catch (error) {
        logger.warn('traffic router failed', { model: deployment.name, error: describeError(error) });
      }
    }
  }

  // ---- routes ----------------------------------------------------------------------------------------

  async function invocations(ctx: Ctx): Promise<void> {
    const { req } = ctx;
    const time = Date.now();
    const format = negotiate(req.headers.accept);
    const body = await readBody(ctx);
    const query = queryOf(req.url ?? '');
    const targetHeader = req.headers['x-amzn-sagemaker-target-model'];
    const target = normaliseTarget(
      typeof targetHeader === 'string' ? targetHeader : (query?.get('model') ?? undefined),
    );
    const pinned = query?.get('version') ?? undefined;
    const deployment = routed(pick(target, pinned), pinned);
    ctx.model = deployment.name;
    ctx.version = deployment.version;
    const series = invocationSeriesOf(deployment);
    ctx.series = series;
    deployment.acquire();
    try {
      const raw = parseInvocationBody(
        body,
        req.headers['content-type'],
        deployment.inputs,
        deployment.transform.target,
        limits.maxRowsPerRequest,
      );
      const rows = toRows(deployment, raw);
      const output = await deployment.batcher.submit(rows);
      series.rows.inc(rows.length);
      const seconds = (performance.now() - ctx.start) / 1000;
      const classes = deployment.model.classes;
      if (format === 'csv') finish(ctx, 200, predictionsCsv(output, classes), 'text/csv; charset=utf-8');
      else finish(ctx, 200, predictionsJsonOf(output, classes), JSON_TYPE);
      afterScoring(ctx, deployment, rows, output, time, seconds);
    } finally {
      deployment.release();
    }
  }

  async function infer(ctx: Ctx, name: string, version: string | undefined): Promise<void> {
    const { req } = ctx;
    const time = Date.now();
    const type = mediaType(req.headers['content-type']);
    if (type !== undefined && type !== JSON_TYPE && !type.endsWith('+json')) {
      throw new UnsupportedMediaTypeError(
        `unsupported Content-Type ${JSON.stringify(req.headers['content-type'])}; send application/json`,
      );
    }
    const body = await readBody(ctx);
    const deployment = routed(pick(name, version), version);
    ctx.model = deployment.name;
    ctx.version = deployment.version;
    deployment.acquire();
    try {
      let json: unknown;
      try {
        json = JSON.parse(body.toString('utf8'));
      } catch (cause) {
        throw new ValidationError(`the request body is not valid JSON: ${(cause as Error).message}`, {
          cause,
        });
      }
      const request = parseInferRequest(
        json,
        deployment.inputs,
        limits.maxRowsPerRequest,
        outputNames(deployment),
      );
      const rows = toRows(deployment, request.rows);
      const output = await deployment.batcher.submit(rows);
      metrics.rows.inc({ model: deployment.name, version: deployment.version }, rows.length);
      const seconds = (performance.now() - ctx.start) / 1000;
      sendJson(ctx, 200, {
        model_name: deployment.name,
        model_version: deployment.version,
        id: request.id ?? ctx.id,
        outputs: inferOutputs(output, deployment.model.classes, request.outputs),
      });
      afterScoring(ctx, deployment, rows, output, time, seconds);
    } finally {
      deployment.release();
    }
  }

  function v2Models(ctx: Ctx, method: string, parts: string[]): Promise<void> | undefined {
    // parts: ['v2', 'models', name, ('versions', v)?, ('ready' | 'infer')?]
    const name = decodePart(parts[2]);
    let i = 3;
    let version: string | undefined;
    if (parts[i] === 'versions') {
      version = decodePart(parts[i + 1]);
      if (version === undefined) throw new NotFoundError('missing model version after /versions/');
      i += 2;
    }
    const action = parts[i];
    if (name === undefined || parts.length > i + 1) throw new NotFoundError(`no route ${ctx.req.url}`);
    ctx.route = action === undefined ? '/v2/models/:name' : `/v2/models/:name/${action}`;
    if (action === 'infer') {
      if (method !== 'POST') throw new MethodNotAllowedError(`use POST for ${ctx.route}`, 'POST');
      return infer(ctx, name, version);
    }
    if (method !== 'GET') throw new MethodNotAllowedError(`use GET for ${ctx.route}`, 'GET');
    if (action === 'ready') {
      const loading = host.names.includes(name) && host.find(name) === undefined;
      if (loading) {
        sendJson(ctx, 503, { name, ready: false });
        return;
      }
      const d = host.get(name, version);
      ctx.model = d.name;
      ctx.version = d.version;
      sendJson(ctx, 200, { name, ready: true });
      return;
    }
    if (action !== undefined) throw new NotFoundError(`no route ${ctx.req.url}`);
    const d = pick(name, version);
    ctx.model = d.name;
    ctx.version = d.version;
    sendJson(ctx, 200, modelMetadata(d));
    return;
  }

  function route(ctx: Ctx): Promise<void> | undefined {
    const { req } = ctx;
    const method = req.method ?? 'GET';
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    switch (path) {
      case '/ping':
        ctx.route = '/ping';
        if (method !== 'GET' && method !== 'HEAD')
          throw new MethodNotAllowedError('use GET for /ping', 'GET');
        finish(ctx, host.ready && !closing ? 200 : 503, '', 'text/plain');
        return;
      case '/invocations':
        ctx.route = '/invocations';
        if (method !== 'POST') throw new MethodNotAllowedError('use POST for /invocations', 'POST');
        return invocations(ctx);
      case '/metrics':
        ctx.route = '/metrics';
        if (method !== 'GET') throw new MethodNotAllowedError('use GET for /metrics', 'GET');
        if (options.clusterMetrics !== undefined) {
          return options.clusterMetrics().then((text) => finish(ctx, 200, text, PROMETHEUS_CONTENT_TYPE));
        }
        finish(ctx, 200, metrics.registry.render(), PROMETHEUS_CONTENT_TYPE);
        return;
      case '/v2':
      case '/v2/':
        ctx.route = '/v2';
        if (method !== 'GET') throw new MethodNotAllowedError('use GET for /v2', 'GET');
        sendJson(ctx, 200, { name: serverName, version: serverVersion, extensions: [] });
        return;
      case '/v2/health/live':
        ctx.route = path;
        if (method !== 'GET') throw new MethodNotAllowedError(`use GET for ${path}`, 'GET');
        sendJson(ctx, 200, { live: true });
        return;
      case '/v2/health/ready': {
        ctx.route = path;
        if (method !== 'GET') throw new MethodNotAllowedError(`use GET for ${path}`, 'GET');
        const ready = host.ready && !closing;
        sendJson(ctx, ready ? 200 : 503, { ready });
        return;
      }
    }
    if (path.startsWith('/v2/models/')) {
      ctx.route = '/v2/models';
      return v2Models(ctx, method, path.slice(1).split('/'));
    }
    ctx.route = 'unknown';
    throw new NotFoundError(`no route ${method} ${path.slice(0, 100)}`);
  }

  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const ctx: Ctx = {
      req,
      res,
      id: randomUUID(),
      start: performance.now(),
      route: '',
      model: '',
      version: '',
      series: undefined,
    };
    inFlight++;
    lastActivity = ctx.start;
    let pending: Promise<void> | undefined;
    try {
      pending = route(ctx);
    } catch (error) {
      fail(ctx, error);
    }
    if (pending === undefined) {
      done();
      return;
    }
    pending.then(done, (error: unknown) => {
      if (!(error instanceof ClientGoneError)) fail(ctx, error);
      else res.destroy();
      done();
    });
  });

  function done(): void {
    inFlight--;
    lastActivity = performance.now();
  }

  // Malformed requests and slow-loris timeouts never reach 'request'; answer them in JSON like everything else.
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) => {
    const code = error.code;
    if (code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const [status, message] =
      code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'request timed out before it was fully received']
        : code === 'HPE_HEADER_OVERFLOW'
          ? [431, 'request headers are too large']
          : [400, 'malformed HTTP request'];
    const body = JSON.stringify({ error: message });
    metrics.errors.inc({ route: 'http', status: String(status) });
    // As Node's own handler: once a response has started on this socket, another one would corrupt it.
    const current = (socket as unknown as { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    if (current?.headersSent) {
      socket.destroy();
      return;
    }
    socket.end(
      `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  });

  let pollTimer: NodeJS.Timeout | undefined;
  let started: Promise<void> | undefined;

  function start(): Promise<void> {
    started ??= host.start().then(() => {
      const pollMs = options.pollIntervalMs ?? 0;
      if (pollMs > 0 && !closing) {
        let polling = false;
        pollTimer = setInterval(() => {
          if (polling) return;
          polling = true;
          void host.poll().finally(() => {
            polling = false;
          });
        }, pollMs);
        pollTimer.unref();
      }
      for (const name of host.names) {
        const d = host.find(name);
        if (d !== undefined) {
          logger.info('serving model', {
            model: d.name,
            version: d.version,
            provider: d.model.provider,
            providerReason: d.model.providerReason,
          });
        }
      }
    });
    return started;
  }

  return {
    server,
    models: host,
    metrics,
    capture,
    async listen(port: number, hostname = '127.0.0.1'): Promise<AddressInfo> {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, hostname, () => {
          server.off('error', reject);
          resolve();
        });
      });
      try {
        await start();
      } catch (error) {
        // A server that cannot load its models must not keep the port, or a retry would fail to bind.
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
        throw error;
      }
      return server.address() as AddressInfo;
    },
    get activeRequests() {
      return inFlight;
    },
    reload: (name, version) => host.reload(name, version),
    onAliasMoved: (event) => host.onAliasMoved(event),
    setRouter(model: string, router: TrafficRouter | undefined): void {
      if (router === undefined) routers.delete(model);
      else routers.set(model, router);
    },
    async close(): Promise<void> {
      if (closing) return;
      closing = true;
      if (pollTimer !== undefined) clearInterval(pollTimer);
      // Stop accepting, but keep open connections: Node's http close() would drop idle keep-alive sockets at
      // once, resetting requests that are already on the wire. From now on every response says
      // `Connection: close`, so each connection ends after its next answer.
      const stopped = new Promise<void>((resolve) => {
        if (!server.listening) resolve();
        else net.Server.prototype.close.call(server, () => resolve());
      });
      const deadline = performance.now() + limits.shutdownGraceMs;
      while (performance.now() < deadline) {
        if (inFlight === 0 && performance.now() - lastActivity >= limits.shutdownQuietMs) break;
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      server.closeAllConnections();
      await stopped;
      // Also clears Node's connection-checking timer; the server is already closed, so the error is expected.
      server.close(() => undefined);
      await started?.catch(() => undefined);
      await capture?.close();
      await host.close();
    },
  };
}

function captureSinkOf(config: CaptureConfig): CaptureSink {
  if (config.sink !== undefined) return config.sink;
  if (config.store !== undefined) return objectStoreCaptureSink(config.store);
  throw new ValidationError('capture needs a sink or a store');
}

/** The client hung up; there is nobody to answer. */
class ClientGoneError extends KilnError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'ClientGone', options);
  }
}

function queryOf(url: string): URLSearchParams | undefined {
  const q = url.indexOf('?');
  return q === -1 ? undefined : new URLSearchParams(url.slice(q + 1));
}

/** SageMaker multi-model endpoints name the artifact (`spam.tar.gz`); the model is its base name. */
function normaliseTarget(target: string | undefined): string | undefined {
  if (target === undefined) return undefined;
  let name = target.trim().replace(/^\/+/, '');
  if (name.endsWith('.tar.gz')) name = name.slice(0, -'.tar.gz'.length);
  return name;
}

function decodePart(part: string | undefined): string | undefined {
  if (part === undefined || part === '') return undefined;
  try {
    return decodeURIComponent(part);
  } catch {
    throw new ValidationError(`bad percent-encoding in ${JSON.stringify(part.slice(0, 60))}`);
  }
}
