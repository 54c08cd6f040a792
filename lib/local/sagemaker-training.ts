import { spawn } from 'node:child_process';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import * as tar from 'tar';
import { ValidationError } from '../core/errors.ts';
import { lakeKeyOf, lakeUri } from '../store/lake-uri.ts';
import type { ObjectStore } from '../store/object-store.ts';

/** The parameters of `sagemaker:createTrainingJob` that a local run honours (others are accepted and ignored). */
interface CreateTrainingJobParameters {
  TrainingJobName: string;
  AlgorithmSpecification?: { TrainingImage?: string };
  HyperParameters?: Record<string, string>;
  InputDataConfig?: Array<{ ChannelName: string; DataSource?: { S3DataSource?: { S3Uri: string } } }>;
  OutputDataConfig?: { S3OutputPath: string };
}

export interface LocalTrainingOptions {
  store: ObjectStore;
  /** Where jobs get their private /opt/ml tree. */
  jobsDir: string;
  /** The command that plays the training container: by default the built-in entry point. */
  command: (image: string | undefined) => string[];
  rootDir: string;
  log?: (line: string) => void;
}

/** Step Functions reports a failed `.sync` job as this error, with the job description as cause. */
export class TrainingJobFailedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'States.TaskFailed';
  }
}

/**
 * The local stand-in for `arn:aws:states:::sagemaker:createTrainingJob.sync`: lays out the SageMaker training
 * contract (/opt/ml/input/config, /opt/ml/input/data/<channel>, /opt/ml/model, /opt/ml/output) under a job folder,
 * runs the training entry point as a separate process, packs /opt/ml/model into model.tar.gz at the output path
 * and answers with DescribeTrainingJob's shape, as the .sync integration does.
 */
export function localTrainingJob(options: LocalTrainingOptions) {
  return async (raw: Record<string, unknown>): Promise<Record<string, unknown>> => {
    const parameters = raw as unknown as CreateTrainingJobParameters;
    const jobName = parameters.TrainingJobName;
    if (!/^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$/.test(jobName ?? '')) {
      throw new ValidationError(`invalid TrainingJobName ${JSON.stringify(jobName)}`);
    }
    const optMl = join(options.jobsDir, jobName, 'opt', 'ml');
    await rm(join(options.jobsDir, jobName), { recursive: true, force: true });
    const configDir = join(optMl, 'input', 'config');
    await mkdir(configDir, { recursive: true });
    await mkdir(join(optMl, 'model'), { recursive: true });
    await mkdir(join(optMl, 'output'), { recursive: true });
    await writeFile(
      join(configDir, 'hyperparameters.json'),
      JSON.stringify(parameters.HyperParameters ?? {}),
    );
    const inputDataConfig: Record<string, unknown> = {};
    for (const channel of parameters.InputDataConfig ?? []) {
      const uri = channel.DataSource?.S3DataSource?.S3Uri;
      if (!uri) throw new ValidationError(`channel ${channel.ChannelName} has no S3Uri`);
      await downloadPrefix(
        options.store,
        lakeKeyOf(options.store, uri),
        join(optMl, 'input', 'data', channel.ChannelName),
      );
      inputDataConfig[channel.ChannelName] = {
        TrainingInputMode: 'File',
        S3DistributionType: 'FullyReplicated',
      };
    }
    await writeFile(join(configDir, 'inputdataconfig.json'), JSON.stringify(inputDataConfig));
    await writeFile(
      join(configDir, 'resourceconfig.json'),
      JSON.stringify({ current_host: 'algo-1', hosts: ['algo-1'], network_interface_name: 'lo' }),
    );

    const startedAt = new Date();
    const exitCode = await runProcess(options.command(parameters.AlgorithmSpecification?.TrainingImage), {
      cwd: options.rootDir,
      env: { ...process.env, KILN_OPT_ML: optMl, TRAINING_JOB_NAME: jobName },
      log: options.log,
    });
    if (exitCode !== 0) {
      const reason = await readFile(join(optMl, 'output', 'failure'), 'utf8').catch(() => '');
      throw new TrainingJobFailedError(
        JSON.stringify({
          TrainingJobName: jobName,
          TrainingJobStatus: 'Failed',
          FailureReason:
            reason.trim() || `training process exited with code ${exitCode} and wrote no failure reason`,
        }),
      );
    }
    const outputPath = parameters.OutputDataConfig?.S3OutputPath;
    if (!outputPath) throw new ValidationError('OutputDataConfig.S3OutputPath is required');
    const outputKey = `${lakeKeyOf(options.store, outputPath).replace(/\/$/, '')}/${jobName}/output/model.tar.gz`;
    const archive = join(options.jobsDir, jobName, 'model.tar.gz');
    await tar.create({ gzip: true, file: archive, cwd: join(optMl, 'model'), portable: true }, ['.']);
    await options.store.putFile(outputKey, archive);
    return {
      TrainingJobName: jobName,
      TrainingJobArn: `arn:aws:sagemaker:local:000000000000:training-job/${jobName}`,
      TrainingJobStatus: 'Completed',
      SecondaryStatus: 'Completed',
      ModelArtifacts: { S3ModelArtifacts: lakeUri(options.store, outputKey) },
      HyperParameters: parameters.HyperParameters ?? {},
      TrainingStartTime: startedAt.toISOString(),
      TrainingEndTime: new Date().toISOString(),
    };
  };
}

async function downloadPrefix(store: ObjectStore, key: string, targetDir: string): Promise<void> {
  const objects = await store.list(key);
  if (objects.length === 0) throw new ValidationError(`training channel is empty: no objects under ${key}`);
  await mkdir(targetDir, { recursive: true });
  // As S3Prefix channels do: the object's path below the prefix's folder becomes its path in the channel.
  const base = key.endsWith('/') ? key : key.slice(0, key.lastIndexOf('/') + 1);
  for (const object of objects) {
    const relativePath = relative(base, object.key);
    await store.getToFile(object.key, join(targetDir, ...relativePath.split('/')));
  }
}

function runProcess(
  command: string[],
  options: { cwd: string; env: NodeJS.ProcessEnv; log?: (line: string) => void },
): Promise<number> {
  const [program, ...args] = command;
  if (!program) throw new ValidationError('empty training command');
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, {
      cwd: options.cwd,
      env: options.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const forward = (chunk: Buffer) => {
      for (const line of chunk.toString('utf8').split('\n')) if (line.trim()) options.log?.(line);
    };
    child.stdout.on('data', forward);
    child.stderr.on('data', forward);
    child.on('error', reject);
    child.on('close', (code) => resolve(code ?? 1));
  });
}
