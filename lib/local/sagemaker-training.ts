import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import * as tar from 'tar';
import { z } from 'zod';
import { describeError, IntegrityError, ValidationError } from '../core/errors.ts';
import { lakeKeyOf, lakeUri } from '../store/lake-uri.ts';
import type { ObjectStore } from '../store/object-store.ts';

/** The image name Prepare uses locally for the built-in trainer (on AWS: the ECR URI of containers/training). */
export const LOCAL_BUILTIN_IMAGE = 'kiln/training:builtin';

/** The parameters of `sagemaker:createTrainingJob` that a local run honours (others are accepted and ignored). */
interface CreateTrainingJobParameters {
  TrainingJobName: string;
  AlgorithmSpecification?: { TrainingImage?: string };
  HyperParameters?: Record<string, string>;
  InputDataConfig?: Array<{ ChannelName: string; DataSource?: { S3DataSource?: { S3Uri: string } } }>;
  OutputDataConfig?: { S3OutputPath: string };
  ResourceConfig?: { InstanceType?: string };
  StoppingCondition?: { MaxRuntimeInSeconds?: number };
}

export interface LocalTrainingOptions {
  store: ObjectStore;
  /** Where jobs get their private /opt/ml tree. */
  jobsDir: string;
  /** The command that plays the training container of an image (see {@link LocalTrainingImages}). */
  command: (image: string | undefined) => string[] | Promise<string[]>;
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

const ImagesFileSchema = z.strictObject({
  images: z.record(z.string(), z.union([z.string().min(1), z.array(z.string()).min(1)])),
});

/**
 * Which local command plays which training image, since there is no container engine here: the built-in
 * image runs `containers/training/train.ts` with this Node; `--command` registers a command for one run
 * under a content-named image; `<home>/images.json` (`{"images": {"<image>": "<command>"}}`) maps the
 * images a team uses on AWS to local commands. String commands run through `/bin/sh -c`.
 */
export class LocalTrainingImages {
  private readonly commands = new Map<string, string[]>();

  constructor(
    private readonly imagesFile: string,
    private readonly builtin: string[] = [
      process.execPath,
      '--import',
      'tsx',
      'containers/training/train.ts',
    ],
  ) {}

  /** Registers a shell command as a training image for this process and returns the image name. */
  registerCommand(command: string): string {
    const trimmed = command.trim();
    if (!trimmed)
      throw new ValidationError('--command is empty: give the command that trains, e.g. "python3 train.py"');
    const image = `local-command/${createHash('sha256').update(trimmed).digest('hex').slice(0, 16)}`;
    this.commands.set(image, ['/bin/sh', '-c', trimmed]);
    return image;
  }

  /** The argv that plays `image`; throws naming the image and where mappings come from. */
  async command(image: string | undefined): Promise<string[]> {
    if (image === undefined || image === LOCAL_BUILTIN_IMAGE) return this.builtin;
    const registered = this.commands.get(image);
    if (registered) return registered;
    const mapped = (await this.readImagesFile())[image];
    if (mapped !== undefined) return typeof mapped === 'string' ? ['/bin/sh', '-c', mapped] : mapped;
    throw new ValidationError(
      `no local command for training image ${JSON.stringify(image)}: pass --command, or map the image in ${this.imagesFile} as {"images": {"${image}": "python3 train.py"}}`,
    );
  }

  private async readImagesFile(): Promise<Record<string, string | string[]>> {
    let text: string;
    try {
      text = await readFile(this.imagesFile, 'utf8');
    } catch (error) {
      if ((error as { code?: string }).code === 'ENOENT') return {};
      throw error;
    }
    try {
      return ImagesFileSchema.parse(JSON.parse(text)).images;
    } catch (cause) {
      throw new IntegrityError(
        `${this.imagesFile} must be {"images": {"<image>": "<command>" | ["argv", …]}}: ${describeError(cause)}`,
        { cause },
      );
    }
  }
}

/**
 * The local stand-in for `arn:aws:states:::sagemaker:createTrainingJob.sync`: lays out the SageMaker training
 * contract (/opt/ml/input/config, /opt/ml/input/data/<channel>, /opt/ml/model, /opt/ml/output) under a job folder,
 * runs the image's command as a separate process, packs /opt/ml/model into model.tar.gz at the output path
 * and answers with DescribeTrainingJob's shape, as the .sync integration does.
 */
export function localTrainingJob(options: LocalTrainingOptions) {
  return async (raw: Record<string, unknown>): Promise<Record<string, unknown>> => {
    const parameters = raw as unknown as CreateTrainingJobParameters;
    const jobName = parameters.TrainingJobName;
    if (!/^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$/.test(jobName ?? '')) {
      throw new ValidationError(`invalid TrainingJobName ${JSON.stringify(jobName)}`);
    }
    const image = parameters.AlgorithmSpecification?.TrainingImage;
    // Resolve the command first: an unknown image fails before any data is copied, as a bad image would.
    const command = await options.command(image);
    const optMl = join(options.jobsDir, jobName, 'opt', 'ml');
    await rm(join(options.jobsDir, jobName), { recursive: true, force: true });
    const configDir = join(optMl, 'input', 'config');
    await mkdir(configDir, { recursive: true });
    await mkdir(join(optMl, 'model'), { recursive: true });
    await mkdir(join(optMl, 'output', 'data'), { recursive: true });
    await writeFile(
      join(configDir, 'hyperparameters.json'),
      JSON.stringify(parameters.HyperParameters ?? {}),
    );
    const inputDataConfig: Record<string, unknown> = {};
    const channelEnv: Record<string, string> = {};
    for (const channel of parameters.InputDataConfig ?? []) {
      const uri = channel.DataSource?.S3DataSource?.S3Uri;
      if (!uri) throw new ValidationError(`channel ${channel.ChannelName} has no S3Uri`);
      const channelDir = join(optMl, 'input', 'data', channel.ChannelName);
      await downloadPrefix(options.store, lakeKeyOf(options.store, uri), channelDir);
      inputDataConfig[channel.ChannelName] = {
        TrainingInputMode: 'File',
        S3DistributionType: 'FullyReplicated',
      };
      channelEnv[`SM_CHANNEL_${channel.ChannelName.toUpperCase()}`] = channelDir;
    }
    await writeFile(join(configDir, 'inputdataconfig.json'), JSON.stringify(inputDataConfig));
    await writeFile(
      join(configDir, 'resourceconfig.json'),
      JSON.stringify({ current_host: 'algo-1', hosts: ['algo-1'], network_interface_name: 'lo' }),
    );

    const startedAt = new Date();
    const maxRuntime = parameters.StoppingCondition?.MaxRuntimeInSeconds;
    const run = await runProcess(command, {
      cwd: options.rootDir,
      // Without a container /opt/ml cannot be mounted: KILN_OPT_ML says where it is, and the SM_* variables of
      // SageMaker's training toolkit say the same for scripts written against them.
      env: {
        ...process.env,
        KILN_OPT_ML: optMl,
        TRAINING_JOB_NAME: jobName,
        SM_MODEL_DIR: join(optMl, 'model'),
        SM_INPUT_DIR: join(optMl, 'input'),
        SM_INPUT_CONFIG_DIR: configDir,
        SM_OUTPUT_DIR: join(optMl, 'output'),
        SM_OUTPUT_DATA_DIR: join(optMl, 'output', 'data'),
        SM_CHANNELS: JSON.stringify(Object.keys(inputDataConfig)),
        SM_HPS: JSON.stringify(parameters.HyperParameters ?? {}),
        ...channelEnv,
      },
      log: options.log,
      timeoutMs: typeof maxRuntime === 'number' && maxRuntime > 0 ? maxRuntime * 1000 : undefined,
    });
    if (run.code !== 0) {
      const reason = (await readFile(join(optMl, 'output', 'failure'), 'utf8').catch(() => '')).trim();
      const lastLine = run.tail.at(-1);
      const fallback = run.timedOut
        ? `MaxRuntimeExceeded: the training command ran longer than ${maxRuntime} s and was stopped`
        : `AlgorithmError: the training command exited with code ${run.code} and wrote no /opt/ml/output/failure${lastLine ? `; its last output: ${lastLine}` : ''}`;
      throw new TrainingJobFailedError(
        JSON.stringify({
          TrainingJobName: jobName,
          TrainingJobStatus: 'Failed',
          // SageMaker keeps the first 1024 characters of the failure file.
          FailureReason: (reason || fallback).slice(0, 1024),
        }),
      );
    }
    const outputPath = parameters.OutputDataConfig?.S3OutputPath;
    if (!outputPath) throw new ValidationError('OutputDataConfig.S3OutputPath is required');
    const outputKey = `${lakeKeyOf(options.store, outputPath).replace(/\/$/, '')}/${jobName}/output/model.tar.gz`;
    const archive = join(options.jobsDir, jobName, 'model.tar.gz');
    // portable + fixed mtime: the archive depends on the model's files only, not on when they were written.
    await tar.create(
      { gzip: true, file: archive, cwd: join(optMl, 'model'), portable: true, mtime: new Date(0) },
      ['.'],
    );
    await options.store.putFile(outputKey, archive);
    return {
      TrainingJobName: jobName,
      TrainingJobArn: `arn:aws:sagemaker:local:000000000000:training-job/${jobName}`,
      TrainingJobStatus: 'Completed',
      SecondaryStatus: 'Completed',
      AlgorithmSpecification: { TrainingImage: image ?? LOCAL_BUILTIN_IMAGE, TrainingInputMode: 'File' },
      ResourceConfig: parameters.ResourceConfig ?? {},
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

const TAIL_LINES = 20;

function runProcess(
  command: string[],
  options: {
    cwd: string;
    env: NodeJS.ProcessEnv;
    log?: (line: string) => void;
    timeoutMs?: number;
  },
): Promise<{ code: number; tail: string[]; timedOut: boolean }> {
  const [program, ...args] = command;
  if (!program) throw new ValidationError('empty training command');
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, {
      cwd: options.cwd,
      env: options.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const tail: string[] = [];
    let timedOut = false;
    const forward = (chunk: Buffer) => {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (!line.trim()) continue;
        options.log?.(line);
        tail.push(line.trim());
        if (tail.length > TAIL_LINES) tail.shift();
      }
    };
    child.stdout.on('data', forward);
    child.stderr.on('data', forward);
    // As SageMaker stops a job: SIGTERM, then SIGKILL if it is still running two minutes later.
    const timer =
      options.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            child.kill('SIGTERM');
            setTimeout(() => child.kill('SIGKILL'), 120_000).unref();
          }, options.timeoutMs);
    timer?.unref();
    child.on('error', (error) => {
      if (timer) clearTimeout(timer);
      reject(
        new ValidationError(`cannot start the training command ${program}: ${describeError(error)}`, {
          cause: error,
        }),
      );
    });
    child.on('close', (code) => {
      if (timer) clearTimeout(timer);
      resolve({ code: code ?? 1, tail, timedOut });
    });
  });
}
