/**
 * Several worker processes behind one port (node:cluster), the way SageMaker model servers use every vCPU
 * (`SAGEMAKER_MODEL_SERVER_WORKERS`). One Node event loop saturates one core on HTTP alone; each worker is a
 * complete inference server with its own models and micro-batcher. The primary only supervises: it forks
 * the workers, replaces one that dies after start-up, stops them all on SIGTERM, and answers `/metrics` for
 * the whole server by gathering every worker's snapshot.
 */
import cluster, { type Worker } from 'node:cluster';
import { readdirSync } from 'node:fs';
import { UnavailableError } from './errors.ts';
import { type MetricSnapshot, renderSnapshots } from './metrics.ts';
import type { ServingLogger } from './model-host.ts';

/** Messages between the primary and its workers; `kiln` tags them apart from anything else on the channel. */
type ClusterMessage =
  | { kiln: 'ready' }
  | { kiln: 'metrics-request'; id: number }
  | { kiln: 'metrics-collect'; id: number }
  | { kiln: 'metrics-snapshot'; id: number; snapshot: MetricSnapshot[] }
  | { kiln: 'metrics-text'; id: number; text: string };

function isClusterMessage(message: unknown): message is ClusterMessage {
  return (
    typeof message === 'object' &&
    message !== null &&
    typeof (message as { kiln?: unknown }).kiln === 'string'
  );
}

/**
 * How many worker processes to run when `SAGEMAKER_MODEL_SERVER_WORKERS` is not set, with SageMaker's model
 * servers' convention: one per GPU when the models run on CUDA, else one per vCPU. Each worker holds its own
 * CUDA session; several on one GPU would split its memory and time-slice its kernels, where one worker's
 * micro-batches already keep it busy.
 */
export function defaultWorkerCount(host: { cuda: boolean; gpus: number; cpus: number }): {
  workers: number;
  reason: string;
} {
  if (host.cuda) {
    const workers = Math.max(1, host.gpus);
    return { workers, reason: `one per GPU (${host.gpus} visible)` };
  }
  return { workers: Math.max(1, host.cpus), reason: `one per vCPU (${host.cpus})` };
}

/**
 * GPUs this container may use: the devices NVIDIA_VISIBLE_DEVICES lists (indexes or UUIDs), else the
 * `/dev/nvidiaN` device files (not nvidiactl or nvidia-uvm, which every GPU container also has).
 */
export function countGpus(env: NodeJS.ProcessEnv = process.env, devDir = '/dev'): number {
  const visible = env.NVIDIA_VISIBLE_DEVICES?.trim();
  if (visible === 'none' || visible === 'void' || visible === '') return 0;
  if (visible !== undefined && visible !== 'all') return visible.split(',').filter((d) => d.trim()).length;
  try {
    return readdirSync(devDir).filter((name) => /^nvidia\d+$/.test(name)).length;
  } catch {
    return 0;
  }
}

export interface SupervisorOptions {
  /** Worker processes to keep running. */
  workers: number;
  logger: ServingLogger;
  /** How long the primary waits for each worker's metrics snapshot. @default 1000 */
  collectTimeoutMs?: number;
  /** A worker that dies after start-up is replaced, at most this many times per minute. @default 5 */
  maxRestartsPerMinute?: number;
}

/**
 * Primary side: forks `workers` copies of this process's entry point and supervises them. Resolves with the
 * process exit code: 0 after a SIGTERM/SIGINT once every worker has shut down cleanly, 1 if a worker failed
 * to start (a bad model or environment would fail every copy alike, so nothing is retried) or if workers
 * keep dying.
 */
export function superviseWorkers(options: SupervisorOptions): Promise<number> {
  const { logger } = options;
  const collectTimeoutMs = options.collectTimeoutMs ?? 1000;
  const maxRestarts = options.maxRestartsPerMinute ?? 5;
  const ready = new Set<Worker>();
  const restarts: number[] = [];
  let stopping = false;
  let failed = false;
  let nextCollect = 1;
  const collecting = new Map<
    number,
    { snapshots: MetricSnapshot[][]; waiting: Set<Worker>; done: () => void }
  >();

  const liveWorkers = () => Object.keys(cluster.workers ?? {}).length;

  return new Promise<number>((resolve) => {
    const stopAll = (reason: string) => {
      if (stopping) return;
      stopping = true;
      logger.info('stopping workers', { reason, workers: liveWorkers() });
      for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGTERM');
      if (liveWorkers() === 0) resolve(failed ? 1 : 0);
    };

    const fork = () => {
      const worker = cluster.fork();
      worker.on('message', (message: unknown) => {
        if (!isClusterMessage(message)) return;
        if (message.kiln === 'ready') {
          ready.add(worker);
          if (ready.size === options.workers) logger.info('all workers ready', { workers: options.workers });
        } else if (message.kiln === 'metrics-request') {
          void gather().then((text) => {
            if (worker.isConnected())
              worker.send({ kiln: 'metrics-text', id: message.id, text } satisfies ClusterMessage);
          });
        } else if (message.kiln === 'metrics-snapshot') {
          const pending = collecting.get(message.id);
          if (pending?.waiting.delete(worker)) {
            pending.snapshots.push(message.snapshot);
            if (pending.waiting.size === 0) pending.done();
          }
        }
      });
      worker.on('exit', (code, signal) => {
        const wasReady = ready.delete(worker);
        for (const pending of collecting.values()) {
          if (pending.waiting.delete(worker) && pending.waiting.size === 0) pending.done();
        }
        if (stopping) {
          // A worker still starting up when the stop came has no handler yet and dies of the signal itself;
          // with nothing in flight, that is a clean stop too.
          if (code !== 0 && signal !== 'SIGTERM' && signal !== 'SIGINT') failed = true;
          if (liveWorkers() === 0) resolve(failed ? 1 : 0);
          return;
        }
        if (!wasReady) {
          logger.error('a worker failed to start; stopping', { pid: worker.process.pid, code, signal });
          failed = true;
          stopAll('worker failed to start');
          return;
        }
        const now = Date.now();
        while (restarts.length > 0 && (restarts[0] as number) < now - 60_000) restarts.shift();
        if (restarts.length >= maxRestarts) {
          logger.error('workers keep dying; stopping', { restartsLastMinute: restarts.length, code, signal });
          failed = true;
          stopAll('too many worker restarts');
          return;
        }
        restarts.push(now);
        logger.warn('worker died; starting a replacement', { pid: worker.process.pid, code, signal });
        fork();
      });
    };

    /** Every ready worker's snapshot, merged; a worker that does not answer in time is left out. */
    const gather = (): Promise<string> => {
      const id = nextCollect++;
      const waiting = new Set(ready);
      const snapshots: MetricSnapshot[][] = [];
      return new Promise<string>((done) => {
        const finish = () => {
          clearTimeout(timer);
          collecting.delete(id);
          done(renderSnapshots(snapshots));
        };
        const timer = setTimeout(finish, collectTimeoutMs);
        collecting.set(id, { snapshots, waiting, done: finish });
        for (const worker of waiting) worker.send({ kiln: 'metrics-collect', id } satisfies ClusterMessage);
        if (waiting.size === 0) finish();
      });
    };

    process.on('SIGTERM', () => stopAll('SIGTERM'));
    process.on('SIGINT', () => stopAll('SIGINT'));
    for (let i = 0; i < options.workers; i++) fork();
  });
}

/** Worker side of the channel: tell the primary when ready, and get whole-server metrics from it. */
export interface WorkerChannel {
  announceReady(): void;
  /** The exposition text for every worker together. */
  clusterMetrics(): Promise<string>;
}

/**
 * Connects a worker's metrics registry to the primary. `snapshot` is called whenever the primary gathers
 * metrics (for a scrape that reached any worker).
 */
export function workerChannel(snapshot: () => MetricSnapshot[], timeoutMs = 3000): WorkerChannel {
  const send = (message: ClusterMessage) => process.send?.(message);
  let nextId = 1;
  const pending = new Map<number, { resolve: (text: string) => void; timer: NodeJS.Timeout }>();
  process.on('message', (message: unknown) => {
    if (!isClusterMessage(message)) return;
    if (message.kiln === 'metrics-collect') {
      send({ kiln: 'metrics-snapshot', id: message.id, snapshot: snapshot() });
    } else if (message.kiln === 'metrics-text') {
      const waiter = pending.get(message.id);
      if (waiter === undefined) return;
      pending.delete(message.id);
      clearTimeout(waiter.timer);
      waiter.resolve(message.text);
    }
  });
  return {
    announceReady: () => send({ kiln: 'ready' }),
    clusterMetrics: () =>
      new Promise<string>((resolve, reject) => {
        const id = nextId++;
        const timer = setTimeout(() => {
          pending.delete(id);
          reject(
            new UnavailableError(
              `the primary process did not answer a metrics request within ${timeoutMs} ms`,
            ),
          );
        }, timeoutMs);
        pending.set(id, { resolve, timer });
        send({ kiln: 'metrics-request', id });
      }),
  };
}
