/**
 * Entry point of the inference container: `docker run <image> serve` on SageMaker, `tsx
 * containers/inference/server.ts` anywhere else. Thin on purpose: configuration from the environment, the
 * server from lib/serving, graceful shutdown on SIGTERM. With more than one worker
 * (`SAGEMAKER_MODEL_SERVER_WORKERS`, default: one per GPU on CUDA, else one per vCPU) this process supervises
 * that many copies of itself sharing the port (lib/serving/cluster.ts).
 */
import cluster from 'node:cluster';
import { availableParallelism } from 'node:os';
import { z } from 'zod';
import { describeError } from '../../lib/core/errors.ts';
import { probeCuda } from '../../lib/ml/onnx-model.ts';
import { objectStoreCaptureSink } from '../../lib/serving/capture.ts';
import { countGpus, defaultWorkerCount, superviseWorkers, workerChannel } from '../../lib/serving/cluster.ts';
import { jsonLogger } from '../../lib/serving/model-host.ts';
import { DirectoryModelSource } from '../../lib/serving/model-source.ts';
import { createInferenceServer, type InferenceServerOptions } from '../../lib/serving/server.ts';
import { openStore } from '../../lib/store/from-env.ts';

const int = (min: number) => z.coerce.number().int().min(min);
const onOff = z
  .enum(['on', 'off', 'true', 'false', '1', '0'])
  .transform((v) => v === 'on' || v === 'true' || v === '1');

/** Every knob, read once; an invalid value stops the container with a message naming it. */
const EnvSchema = z.object({
  SAGEMAKER_BIND_TO_PORT: int(0).max(65_535).default(8080),
  KILN_BIND_HOST: z.string().min(1).default('0.0.0.0'),
  KILN_MODEL_DIR: z.string().min(1).default('/opt/ml/model'),
  KILN_MODEL_NAME: z.string().min(1).optional(),
  KILN_MODEL_VERSION: z.string().min(1).optional(),
  KILN_EXECUTION_PROVIDER: z.enum(['auto', 'cpu', 'cuda']).default('auto'),
  KILN_ORT_THREADS: int(1).optional(),
  KILN_BATCHING: onOff.default(true),
  KILN_MAX_BATCH_SIZE: int(1).default(64),
  KILN_MAX_WAIT_MS: z.coerce.number().min(0).default(2),
  KILN_MAX_BODY_BYTES: int(1).default(6 * 1024 * 1024),
  KILN_MAX_ROWS: int(1).default(10_000),
  KILN_POLL_INTERVAL_MS: int(0).default(0),
  /** `s3://bucket[/prefix]` or a folder; capture is off without it. */
  KILN_CAPTURE_LAKE: z.string().min(1).optional(),
  KILN_CAPTURE_RATE: z.coerce.number().min(0).max(1).default(1),
  /**
   * Server processes sharing the port, SageMaker's own name for the knob. Each loads its own copy of the
   * models (on a GPU instance, each its own CUDA session). @default one per GPU on CUDA, else one per vCPU
   */
  SAGEMAKER_MODEL_SERVER_WORKERS: int(1).max(256).optional(),
});

async function main(argv: string[]): Promise<void> {
  // SageMaker runs `<image> serve`; `train` would mean the wrong image was given to a training job.
  const command = argv[0];
  if (command !== undefined && command !== 'serve') {
    throw new Error(
      `unknown command ${JSON.stringify(command)}: this image only serves (use "serve" or nothing)`,
    );
  }
  const parsed = EnvSchema.safeParse(process.env);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`invalid environment: ${issue?.path.join('.')}: ${issue?.message}`);
  }
  const env = parsed.data;
  if (cluster.isPrimary) {
    const { workers, reason } =
      env.SAGEMAKER_MODEL_SERVER_WORKERS === undefined
        ? defaultWorkerCount({
            cuda: probeCuda().available,
            gpus: countGpus(),
            cpus: availableParallelism(),
          })
        : { workers: env.SAGEMAKER_MODEL_SERVER_WORKERS, reason: 'SAGEMAKER_MODEL_SERVER_WORKERS' };
    if (workers > 1) {
      jsonLogger.info('starting workers', { workers, reason });
      process.exitCode = await superviseWorkers({ workers, logger: jsonLogger });
      return;
    }
  }
  const channel = cluster.isWorker ? workerChannel(() => inference.metrics.registry.snapshot()) : undefined;
  const options: InferenceServerOptions = {
    source: new DirectoryModelSource({
      dir: env.KILN_MODEL_DIR,
      ...(env.KILN_MODEL_NAME === undefined ? {} : { name: env.KILN_MODEL_NAME }),
      ...(env.KILN_MODEL_VERSION === undefined ? {} : { version: env.KILN_MODEL_VERSION }),
    }),
    provider: env.KILN_EXECUTION_PROVIDER,
    batching: {
      enabled: env.KILN_BATCHING,
      maxBatchSize: env.KILN_MAX_BATCH_SIZE,
      maxWaitMs: env.KILN_MAX_WAIT_MS,
    },
    limits: { maxBodyBytes: env.KILN_MAX_BODY_BYTES, maxRowsPerRequest: env.KILN_MAX_ROWS },
    pollIntervalMs: env.KILN_POLL_INTERVAL_MS,
    logger: jsonLogger,
    ...(channel === undefined ? {} : { clusterMetrics: channel.clusterMetrics }),
  };
  if (env.KILN_ORT_THREADS !== undefined) options.intraOpNumThreads = env.KILN_ORT_THREADS;
  if (env.KILN_CAPTURE_LAKE !== undefined) {
    options.capture = {
      sink: objectStoreCaptureSink(openStore(env.KILN_CAPTURE_LAKE)),
      sampleRate: env.KILN_CAPTURE_RATE,
    };
  }
  const inference = createInferenceServer(options);

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    jsonLogger.info('shutting down', { signal });
    inference.close().then(
      () => process.exit(0),
      (error: unknown) => {
        jsonLogger.error('shutdown failed', { error: describeError(error) });
        process.exit(1);
      },
    );
  };
  // Request handlers catch their own errors; anything that still escapes is a bug to log, not a reason to
  // drop every in-flight request with the process.
  process.on('unhandledRejection', (reason: unknown) => {
    jsonLogger.error('unhandled rejection', {
      error: reason instanceof Error ? (reason.stack ?? reason.message) : String(reason),
    });
  });
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));

  const address = await inference.listen(env.SAGEMAKER_BIND_TO_PORT, env.KILN_BIND_HOST);
  channel?.announceReady();
  jsonLogger.info('inference server listening', {
    address: address.address,
    port: address.port,
    models: inference.models.names,
    capture:
      env.KILN_CAPTURE_LAKE === undefined ? 'off' : `${env.KILN_CAPTURE_RATE} to ${env.KILN_CAPTURE_LAKE}`,
  });
}

main(process.argv.slice(2)).catch((error: unknown) => {
  jsonLogger.error('inference server failed to start', {
    error: error instanceof Error ? (error.stack ?? error.message) : String(error),
  });
  process.exit(1);
});
