import { readFileSync } from 'node:fs';
import { access, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { basename, extname, join } from 'node:path';
import { describeError, NotFoundError, ValidationError } from '../core/errors.ts';
import { readCuratedRows, readTableFile } from '../etl/tables.ts';
import { LocalPlatform, REPO_ROOT } from '../local/platform.ts';
import { runMonitorJob } from '../monitoring/job.ts';
import { predictRows } from '../registry/batch-predict.ts';
import { createRegistryHttpServer } from '../registry/http-server.ts';
import { ensureLocalToken, localTokenPath } from '../registry/local-token.ts';
import { RegistryModelSource } from '../registry/model-source.ts';
import { jsonLogger, type ServingLogger } from '../serving/model-host.ts';
import { createInferenceServer } from '../serving/server.ts';
import { startLocalAutomation } from '../updates/local.ts';
import { Reporter } from './reporter.ts';

interface GlobalOptions {
  home: string;
  json?: boolean;
}

export const SAMPLE_DATA = join(REPO_ROOT, 'examples', 'data', 'churn.csv');
const SAMPLE_TARGET = 'churn';

export function packageVersion(): string {
  return (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
}

function print(options: GlobalOptions, value: unknown, human: () => string): void {
  process.stdout.write(options.json ? `${JSON.stringify(value, null, 2)}\n` : `${human()}\n`);
}

async function openPlatform(options: GlobalOptions, reporter: Reporter): Promise<LocalPlatform> {
  return LocalPlatform.open({
    home: options.home,
    onProgress: reporter.onState,
    log: process.env.KILN_DEBUG ? (line) => process.stderr.write(`    ${line}\n`) : undefined,
  });
}

async function assertReadable(file: string): Promise<void> {
  try {
    await access(file);
  } catch {
    throw new NotFoundError(`file not found: ${file}`);
  }
}

/** `kiln ingest`: land files in the raw zone. */
export async function ingest(files: string[], options: GlobalOptions & { dataset: string }) {
  const reporter = new Reporter(false);
  for (const file of files) await assertReadable(file);
  const platform = await openPlatform(options, reporter);
  reporter.stage('ingest');
  const landing = await platform.ingest(files, options.dataset);
  reporter.done('ingest', `${landing.objects.length} file(s) → raw/${options.dataset}/${landing.ingestId}/`);
  print(options, landing, () =>
    landing.objects.map((o) => `${o.key}  ${o.format}  ${o.bytes} bytes`).join('\n'),
  );
}

/** `kiln etl`: run the ETL state machine. */
export async function etl(options: GlobalOptions & { dataset: string }) {
  const reporter = new Reporter(false);
  const platform = await openPlatform(options, reporter);
  const result = await runEtl(platform, reporter, options.dataset);
  print(options, result, () => JSON.stringify(result, null, 2));
}

async function runEtl(platform: LocalPlatform, reporter: Reporter, dataset: string) {
  reporter.stage('etl');
  reporter.pipeline(4);
  const output = await platform.etl(dataset);
  const result = output.result as Record<string, unknown>;
  reporter.done(
    'etl',
    `${result.read} read = ${result.accepted} accepted + ${result.quarantined} quarantined → ${dataset}@${result.version}${result.created ? '' : ' (unchanged)'}`,
  );
  return result;
}

interface TrainOptions extends GlobalOptions {
  dataset: string;
  target: string;
  model?: string;
  algorithm: 'gbdt' | 'linear';
  datasetVersion?: string;
  testData?: string;
  param?: string[];
  seed: number;
  gateMargin: number;
  /** Bring your own: a shell command that honours the training contract. */
  command?: string;
  /** Bring your own: a training image (locally: mapped to a command). */
  image?: string;
  instanceType?: string;
}

/** `kiln train`: run the training state machine. */
export async function train(options: TrainOptions) {
  const reporter = new Reporter(false);
  if (options.testData) await assertReadable(options.testData);
  const platform = await openPlatform(options, reporter);
  const summary = await runTraining(platform, reporter, options);
  print(options, summary, () => formatTraining(summary));
}

async function runTraining(platform: LocalPlatform, reporter: Reporter, options: TrainOptions) {
  const hyperparameters: Record<string, string> = {};
  for (const pair of options.param ?? []) {
    const [key, ...rest] = pair.split('=');
    if (!key || rest.length === 0)
      throw new ValidationError(`--param expects key=value, got ${JSON.stringify(pair)}`);
    hyperparameters[key] = rest.join('=');
  }
  const testDataKey = options.testData
    ? await platform.landHoldout(options.testData, options.dataset)
    : undefined;
  const image = options.command ? platform.trainingImages.registerCommand(options.command) : options.image;
  reporter.stage('train');
  reporter.pipeline(6);
  const output = await platform.train({
    dataset: options.dataset,
    target: options.target,
    model: options.model,
    version: options.datasetVersion,
    algorithm: options.algorithm,
    hyperparameters,
    seed: options.seed,
    gateMargin: options.gateMargin,
    ...(testDataKey ? { testDataKey } : {}),
    ...(image ? { image } : {}),
    ...(options.instanceType ? { instanceType: options.instanceType } : {}),
  });
  const registration = output.registration as {
    model: string;
    version: number;
    stage: string;
    promoted: boolean;
  };
  const evaluation = output.evaluation as { metrics: Record<string, unknown>; gate: Record<string, unknown> };
  const record = await platform.registry.getVersion(registration.model, registration.version);
  const modelArtifact = record.artifacts['model.onnx'];
  const summary = {
    model: record.model,
    version: record.version,
    stage: record.stage,
    algorithm: record.lineage.algorithm,
    metrics: evaluation.metrics,
    gate: evaluation.gate,
    promoted: registration.promoted,
    artifact: modelArtifact
      ? { key: modelArtifact.key, sha256: modelArtifact.sha256, size: modelArtifact.size }
      : null,
    dataset: { name: record.lineage.dataset, version: record.lineage.datasetVersion },
    trainingJob: record.lineage.trainingJob,
  };
  reporter.done(
    'train',
    `${record.model}@${record.version} ${headlineMetrics(evaluation.metrics)} · ${evaluation.gate.reason}`,
  );
  return summary;
}

function headlineMetrics(metrics: Record<string, unknown>): string {
  const pick = ['accuracy', 'roc_auc', 'f1', 'rmse', 'mae', 'r2'].filter(
    (name) => typeof metrics[name] === 'number',
  );
  return pick.map((name) => `${name}=${(metrics[name] as number).toFixed(4)}`).join(' ');
}

function formatTraining(summary: Awaited<ReturnType<typeof runTraining>>): string {
  return [
    `model     ${summary.model}@${summary.version} (${summary.stage}${summary.promoted ? ', champion' : ''})`,
    `algorithm ${summary.algorithm}`,
    `metrics   ${headlineMetrics(summary.metrics)}`,
    `gate      ${summary.gate.reason}`,
    `artifact  ${summary.artifact?.key} sha256:${summary.artifact?.sha256.slice(0, 16)}…`,
  ].join('\n');
}

/** `kiln models list`. */
export async function modelsList(options: GlobalOptions) {
  const platform = await openPlatform(options, new Reporter(true));
  const models: Array<{
    model: string;
    versions: Array<{ version: number; stage: string; createdAt: string; metrics: Record<string, unknown> }>;
    aliases: Record<string, number>;
  }> = [];
  for (const name of await platform.registry.listModels()) {
    const versions = await platform.registry.listVersions(name);
    const { aliases } = await platform.registry.readAliases(name);
    models.push({
      model: name,
      versions: versions.map((v) => ({
        version: v.version,
        stage: v.stage,
        createdAt: v.createdAt,
        metrics: v.metrics,
      })),
      aliases,
    });
  }
  print(options, models, () =>
    models.length === 0
      ? 'no models yet: run `kiln up` or `kiln train`'
      : models
          .map((m) => {
            const aliasText = Object.entries(m.aliases)
              .map(([alias, version]) => `${alias}→${version}`)
              .join(' ');
            const latest = m.versions.at(-1);
            return `${m.model.padEnd(20)} ${m.versions.length} version(s)  latest ${latest?.version} (${latest?.stage})  ${aliasText}`;
          })
          .join('\n'),
  );
}

/** `kiln models show NAME[@VERSION]`. */
export async function modelsShow(reference: string, options: GlobalOptions) {
  const platform = await openPlatform(options, new Reporter(true));
  const record = await platform.registry.resolve(reference);
  const { aliases } = await platform.registry.readAliases(record.model);
  const aliasNames = Object.entries(aliases)
    .filter(([, version]) => version === record.version)
    .map(([alias]) => alias);
  print(options, { ...record, aliases: aliasNames }, () =>
    [
      `${record.model}@${record.version}  stage ${record.stage}  aliases ${aliasNames.join(', ') || '-'}`,
      `task      ${record.task} → ${record.target}${record.classes.length ? ` (${record.classes.join(', ')})` : ''}`,
      `metrics   ${headlineMetrics(record.metrics)}`,
      `data      ${record.lineage.dataset}@${record.lineage.datasetVersion}`,
      `code      ${record.lineage.codeVersion}  algorithm ${record.lineage.algorithm}  seed ${record.lineage.seed}`,
      `transform ${record.lineage.transformHash}`,
      `artifact  sha256:${record.lineage.artifactSha256}`,
      `job       ${record.lineage.trainingJob}  ${record.lineage.startedAt} → ${record.lineage.endedAt}`,
    ].join('\n'),
  );
}

/** Server events for a person at a terminal: one short line each on stderr (JSON logs with KILN_DEBUG). */
const terminalLogger: ServingLogger = {
  info: (message, fields) => {
    if (message === 'serving model') {
      process.stderr.write(
        `  ${fields?.model}@${fields?.version} on ${fields?.provider} (${fields?.providerReason})\n`,
      );
    }
  },
  warn: (message, fields) => process.stderr.write(`  warning: ${message} ${JSON.stringify(fields ?? {})}\n`),
  error: (message, fields) => process.stderr.write(`  error: ${message} ${JSON.stringify(fields ?? {})}\n`),
};

/** Fails fast, before any work, when the port is taken (the server would fail at the end otherwise). */
async function assertPortFree(port: number, host = '127.0.0.1'): Promise<void> {
  if (port === 0) return;
  await new Promise<void>((resolve, reject) => {
    const probe = createServer();
    probe.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        error.code === 'EADDRINUSE'
          ? new ValidationError(`port ${port} is in use: pass --port N (or --port 0 for any free port)`)
          : error,
      ),
    );
    probe.listen(port, host, () => probe.close(() => resolve()));
  });
}

/**
 * Starts the local endpoints: the inference server (every model's champion, reloaded when an alias moves)
 * and the registry API with the home's bearer token, both on 127.0.0.1 only unless `host` says otherwise.
 */
async function startServer(
  platform: LocalPlatform,
  port: number,
  host: string,
  registryPort: number,
  monitorEveryMinutes = DEFAULT_MONITOR_MINUTES,
) {
  await assertPortFree(port, host);
  await assertPortFree(registryPort, host);
  const inference = createInferenceServer({
    source: new RegistryModelSource(platform.registry),
    capture: { store: platform.store, sampleRate: 1 },
    logger: process.env.KILN_DEBUG ? jsonLogger : terminalLogger,
  });
  const address = await inference.listen(port, host);
  const unsubscribe = platform.bus.subscribe(
    { source: ['kiln.registry'], detailType: ['AliasMoved'] },
    (event) => inference.onAliasMoved(event).then(() => undefined),
  );
  const registryServer = createRegistryHttpServer({
    registry: platform.registry,
    token: await ensureLocalToken(platform.home.dir),
  });
  const registryAddress = await registryServer.listen(registryPort, host);
  // The local stand-ins for the AWS automation: EventBridge rules (retraining, canary rollouts) and the
  // scheduled monitor Lambda, both driven by the same modules the cloud handlers use.
  const automation = startLocalAutomation(platform, {
    server: inference,
    log: (line) => process.stderr.write(`  ${line}\n`),
  });
  const monitorTimer = setInterval(() => {
    runMonitorJob(platform.store, {}, { events: platform.bus })
      .then((result) => {
        for (const entry of result.entries) process.stderr.write(`  monitor ${JSON.stringify(entry)}\n`);
      })
      .catch((error: unknown) => process.stderr.write(`  monitor failed: ${describeError(error)}\n`));
  }, monitorEveryMinutes * 60_000);
  monitorTimer.unref();
  return {
    url: `http://${host}:${address.port}`,
    registryUrl: `http://${host}:${registryAddress.port}`,
    tokenFile: localTokenPath(platform.home.dir),
    close: async () => {
      clearInterval(monitorTimer);
      unsubscribe();
      await automation.stop();
      await Promise.all([inference.close(), registryServer.close()]);
    },
  };
}

/** How often the local server runs the drift and quality monitor over captured traffic (minutes). */
const DEFAULT_MONITOR_MINUTES = 15;

/** `kiln serve`: serve until Ctrl-C. */
export async function serve(
  options: GlobalOptions & { port: number; host: string; registryPort?: number; monitorEvery?: number },
) {
  const reporter = new Reporter(false);
  const platform = await openPlatform(options, reporter);
  const models = await platform.registry.listModels();
  if (models.length === 0)
    throw new NotFoundError('no models registered yet: run `kiln up` or `kiln train` first');
  const endpoints = await startServer(
    platform,
    options.port,
    options.host,
    registryPortFor(options),
    options.monitorEvery,
  );
  process.stderr.write(
    `serving ${models.join(', ')} on ${endpoints.url}; registry API on ${endpoints.registryUrl} ` +
      `(bearer token in ${endpoints.tokenFile})  — Ctrl-C to stop\n`,
  );
  await waitForShutdown();
  await endpoints.close();
}

/** The registry API listens next to the inference server (port + 1), or on any free port with --port 0. */
function registryPortFor(options: { port: number; registryPort?: number }): number {
  return options.registryPort ?? (options.port === 0 ? 0 : options.port + 1);
}

/** `kiln predict`: batch scoring with the same transform and ONNX Runtime as the server. */
export async function predict(options: GlobalOptions & { model: string; input: string; output?: string }) {
  await assertReadable(options.input);
  const platform = await openPlatform(options, new Reporter(true));
  const record = await platform.registry.resolve(options.model);
  const rows = await readTableFile(options.input, { textColumns: true });
  if (rows.length === 0) throw new ValidationError(`${options.input} has no rows`);
  const predictions = await predictRows(platform.registry, record, rows);
  const lines = predictions.map((prediction) => JSON.stringify(prediction));
  if (!options.output) {
    process.stdout.write(`${lines.join('\n')}\n`);
    return;
  }
  if (extname(options.output) === '.csv') {
    const header = Object.keys(predictions[0] ?? {});
    const csv = [
      header.join(','),
      ...predictions.map((p) => header.map((h) => csvCell((p as Record<string, unknown>)[h])).join(',')),
    ];
    await writeFile(options.output, `${csv.join('\n')}\n`);
  } else {
    await writeFile(options.output, `${lines.join('\n')}\n`);
  }
  process.stderr.write(
    `wrote ${predictions.length} predictions of ${record.model}@${record.version} to ${options.output}\n`,
  );
}

function csvCell(value: unknown): string {
  const text = typeof value === 'object' && value !== null ? JSON.stringify(value) : String(value ?? '');
  return /[",\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

interface UpOptions extends GlobalOptions {
  data?: string;
  target?: string;
  dataset?: string;
  model?: string;
  port: number;
  registryPort?: number;
  once?: boolean;
}

/** `kiln up` / `npm start`: the whole loop, visibly, then serve. */
export async function up(options: UpOptions) {
  const started = performance.now();
  if (options.data && !options.target)
    throw new ValidationError('--data needs --target COLUMN: the column to predict');
  if (options.target && !options.data) throw new ValidationError('--target goes with --data FILE');
  const data = options.data ?? SAMPLE_DATA;
  const target = options.target ?? SAMPLE_TARGET;
  await assertReadable(data);
  const dataset = options.dataset ?? datasetNameOf(data);
  await assertPortFree(options.port);
  // Progress goes to stderr, so it shows even with --json (stdout carries only the JSON summary).
  const reporter = new Reporter(false);

  reporter.stage('home');
  const platform = await openPlatform(options, reporter);
  reporter.done('home', platform.home.dir);

  reporter.stage('ingest');
  const landing = await platform.ingest([data], dataset);
  reporter.done('ingest', landing.objects.map((o) => o.key).join(', '));

  const etlResult = await runEtl(platform, reporter, dataset);
  const training = await runTraining(platform, reporter, {
    ...options,
    dataset,
    target,
    algorithm: 'gbdt',
    seed: 0,
    gateMargin: 0,
  });

  reporter.stage('serve');
  const endpoints = await startServer(platform, options.port, '127.0.0.1', registryPortFor(options));
  const url = endpoints.url;
  reporter.done('serve', url);

  reporter.stage('predict');
  const sample = (await readCuratedRows(platform.store, dataset, String(etlResult.version), 'test')).slice(
    0,
    3,
  );
  const instances = sample.map((row) =>
    Object.fromEntries(Object.entries(row).filter(([key]) => key !== target)),
  );
  const response = await fetch(`${url}/invocations?model=${training.model}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ instances }),
  });
  const body = (await response.json()) as { predictions?: Array<Record<string, unknown>>; error?: string };
  if (!response.ok || !body.predictions) {
    await endpoints.close();
    throw new Error(`the server answered ${response.status}: ${body.error ?? 'no predictions'}`);
  }
  const predictions = body.predictions.map((prediction, i) => ({
    ...prediction,
    actual: sample[i]?.[target],
  }));
  reporter.done('predict', `${predictions.length} predictions over HTTP`);

  const summary = {
    model: training.model,
    version: training.version,
    dataset: {
      name: dataset,
      version: etlResult.version,
      rows: etlResult.accepted,
      quarantined: etlResult.quarantined,
    },
    metrics: training.metrics,
    gate: training.gate,
    endpoint: url,
    registry: endpoints.registryUrl,
    predictions,
    seconds: Number(((performance.now() - started) / 1000).toFixed(1)),
    next: [
      `curl -s ${url}/ping`,
      `curl -s -X POST ${url}/invocations?model=${training.model} -H 'content-type: application/json' -d '${JSON.stringify({ instances: instances.slice(0, 1) })}'`,
      `npx kiln models show ${training.model} --home ${options.home}`,
      `npx kiln predict --model ${training.model} --input ${data} --home ${options.home}`,
    ],
  };
  print(options, summary, () =>
    [
      '',
      `Kiln is up in ${summary.seconds} s.`,
      `  model      ${summary.model}@${summary.version} (${training.stage})`,
      `  data       ${dataset}@${etlResult.version}: ${etlResult.accepted} rows curated, ${etlResult.quarantined} quarantined`,
      `  held-out   ${headlineMetrics(training.metrics)}`,
      `  endpoint   ${url}  (SageMaker: /ping /invocations · Open Inference Protocol: /v2/models/${summary.model}/infer)`,
      `  registry   ${endpoints.registryUrl}  (bearer token in ${endpoints.tokenFile})`,
      '  predictions',
      ...predictions.map((p) => `    ${JSON.stringify(p)}`),
      '  try next',
      ...summary.next.map((line) => `    ${line}`),
    ].join('\n'),
  );
  if (!options.once) {
    process.stderr.write(`\nserving on ${url} — Ctrl-C to stop\n`);
    await waitForShutdown();
  }
  await endpoints.close();
  await platform.bus.drain();
}

function datasetNameOf(file: string): string {
  const stem = basename(file)
    .replace(/(\.gz)?$/, '')
    .replace(/\.[^.]+$/, '');
  const name = stem
    .toLowerCase()
    .replace(/[^a-z0-9_-]+/g, '-')
    .replace(/^[^a-z]+/, '')
    .slice(0, 64);
  if (!name) throw new ValidationError(`cannot derive a dataset name from ${file}: pass --dataset NAME`);
  return name;
}

function waitForShutdown(): Promise<void> {
  return new Promise((resolve) => {
    const stop = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}
