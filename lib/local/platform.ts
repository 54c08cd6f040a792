import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EventTypes, setLocalEventPublisher } from '../core/events.ts';
import { ingestFiles } from '../etl/ingest.ts';
import { ModelRegistry } from '../registry/registry.ts';
import { synthesizePlatformTemplate } from '../stacks/synth.ts';
import { openStore } from '../store/from-env.ts';
import type { FileSystemStore } from '../store/fs-store.ts';
import { assertName } from '../store/layout.ts';
import { localStartExecutionSync, STATES_START_EXECUTION_SYNC } from '../updates/local-sfn.ts';
import { LocalEventBus } from './event-bus.ts';
import { type KilnHome, openHome } from './home.ts';
import { LocalPipelines, type StateProgress } from './pipeline-runner.ts';
import { LOCAL_BUILTIN_IMAGE, LocalTrainingImages, localTrainingJob } from './sagemaker-training.ts';
import type { CfnTemplate } from './template.ts';

/** Repository root: handler paths in the template (KILN_HANDLER) and the training entry point are relative to it. */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

const SAGEMAKER_TRAINING_SYNC = 'arn:aws:states:::sagemaker:createTrainingJob.sync';

export interface LocalPlatformOptions {
  home: string;
  onProgress?: (progress: StateProgress) => void;
  log?: (line: string) => void;
}

/**
 * The embedded default platform: a lake in a folder, the synthesized state machines run in process,
 * handlers from functions/, the training entry point as a child process, and an in-process event bus.
 */
export class LocalPlatform {
  private pipelinesLoading?: Promise<LocalPipelines>;
  /** Which local command plays which training image (`--command`, `<home>/images.json`, the built-in). */
  readonly trainingImages: LocalTrainingImages;

  private constructor(
    readonly home: KilnHome,
    readonly store: FileSystemStore,
    readonly bus: LocalEventBus,
    readonly registry: ModelRegistry,
    private readonly options: LocalPlatformOptions,
  ) {
    this.trainingImages = new LocalTrainingImages(join(home.dir, 'images.json'));
  }

  static async open(options: LocalPlatformOptions): Promise<LocalPlatform> {
    const home = await openHome(options.home);
    // Handlers read their lake from KILN_LAKE exactly as in Lambda; here it is the home's lake folder.
    process.env.KILN_LAKE = home.lakeDir;
    // What TrainingPipeline sets on the Prepare function: the built-in image (here a name the stand-in maps).
    process.env.KILN_TRAINING_IMAGE = LOCAL_BUILTIN_IMAGE;
    process.env.KILN_TRAINING_INSTANCE_TYPE = 'ml.m5.xlarge';
    // Handler logs are for CloudWatch; on a terminal they would bury the progress (KILN_DEBUG shows them).
    // Handlers are imported later, on first use, so their loggers read this level when they are created.
    process.env.POWERTOOLS_LOG_LEVEL ??= process.env.KILN_DEBUG ? 'DEBUG' : 'SILENT';
    const store = openStore(home.lakeDir) as FileSystemStore;
    const bus = new LocalEventBus(home.eventsLog);
    setLocalEventPublisher(bus);
    return new LocalPlatform(home, store, bus, new ModelRegistry(store, bus), options);
  }

  /** The state machines as CDK synthesizes them, with local stand-ins for every task (synthesized once). */
  pipelines(): Promise<LocalPipelines> {
    this.pipelinesLoading ??= Promise.resolve().then(() => {
      const template = synthesizePlatformTemplate() as unknown as CfnTemplate;
      return new LocalPipelines({
        template,
        rootDir: REPO_ROOT,
        onProgress: this.options.onProgress,
        services: {
          [SAGEMAKER_TRAINING_SYNC]: localTrainingJob({
            store: this.store,
            jobsDir: this.home.jobsDir,
            rootDir: REPO_ROOT,
            command: (image) => this.trainingImages.command(image),
            log: this.options.log,
          }),
          // The retraining state machine starts the ETL and training machines as child executions.
          [STATES_START_EXECUTION_SYNC]: localStartExecutionSync(template, () => this.pipelines()),
        },
      });
    });
    return this.pipelinesLoading;
  }

  /** Lands files in the raw zone and announces each, as S3 would with an Object Created event. */
  async ingest(files: string[], dataset: string) {
    const landing = await ingestFiles(this.store, dataset, files);
    await this.bus.publish(
      landing.objects.map((object) => ({
        source: 'kiln.ingest' as const,
        detailType: EventTypes.rawObjectCreated,
        detail: { bucket: { name: 'kiln-local-lake' }, object: { key: object.key, size: object.bytes } },
      })),
    );
    return landing;
  }

  /** Stores a user's held-out file (immutable, content-addressed) so training can evaluate on it. */
  async landHoldout(file: string, dataset: string): Promise<string> {
    const body = await readFile(file);
    const digest = createHash('sha256').update(body).digest('hex').slice(0, 16);
    const key = `holdout/${assertName('dataset', dataset)}/${digest}/${basename(file).replace(/[^A-Za-z0-9._-]/g, '_')}`;
    if (!(await this.store.head(key))) await this.store.put(key, body, { ifNoneMatch: '*' });
    return key;
  }

  /** Runs the ETL state machine for a dataset. */
  async etl(dataset: string): Promise<Record<string, unknown>> {
    const pipelines = await this.pipelines();
    const output = await pipelines.run('etl', 'Plan', { dataset });
    return output;
  }

  /** Runs the training state machine. */
  async train(request: Record<string, unknown>): Promise<Record<string, unknown>> {
    const pipelines = await this.pipelines();
    return pipelines.run('training', 'Prepare', request);
  }
}
