import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describeError, IntegrityError, NotFoundError, ValidationError } from '../core/errors.ts';
import { type FittedTransform, parseFittedTransform } from '../core/transform.ts';

/** Everything the server needs to serve one model version. */
export interface LoadedModelBundle {
  name: string;
  version: string;
  onnx: Uint8Array;
  transform: FittedTransform;
}

/** Where the server gets models from: the registry, a SageMaker model directory, or memory in tests. */
export interface ModelSource {
  /** Names of the models this source can serve. */
  list(): Promise<string[]>;
  /** Load a version; without one, the version currently behind the default alias (or the latest). */
  load(name: string, version?: string): Promise<LoadedModelBundle>;
  /** The version currently behind the default alias; polled to notice alias moves. */
  current(name: string): Promise<string>;
}

export interface DirectoryModelSourceOptions {
  /** The SageMaker model directory. @default '/opt/ml/model' */
  dir?: string;
  /** Model name. @default env KILN_MODEL_NAME, else 'model' */
  name?: string;
  /** Version label. @default env KILN_MODEL_VERSION, else a content hash of model.onnx and transform.json */
  version?: string;
}

/**
 * The SageMaker hosting layout: one model, `model.onnx` and `transform.json` in `/opt/ml/model` (SageMaker
 * unpacks `model.tar.gz` there before the container starts). The version is a content hash, so polling
 * notices when the files are replaced in place.
 */
export class DirectoryModelSource implements ModelSource {
  readonly dir: string;
  readonly name: string;
  private readonly fixedVersion: string | undefined;

  constructor(options: DirectoryModelSourceOptions = {}) {
    this.dir = options.dir ?? '/opt/ml/model';
    this.name = options.name ?? (process.env.KILN_MODEL_NAME || 'model');
    this.fixedVersion = options.version ?? (process.env.KILN_MODEL_VERSION || undefined);
  }

  async list(): Promise<string[]> {
    return [this.name];
  }

  async load(name: string, version?: string): Promise<LoadedModelBundle> {
    this.checkName(name);
    const { onnx, transformText } = await this.readFiles();
    const actual = this.fixedVersion ?? contentVersion(onnx, transformText);
    if (version !== undefined && version !== actual) {
      throw new NotFoundError(`model ${name} has no version ${version} in ${this.dir} (it holds ${actual})`);
    }
    let json: unknown;
    try {
      json = JSON.parse(transformText);
    } catch (cause) {
      throw new IntegrityError(`${join(this.dir, 'transform.json')} is not valid JSON`, { cause });
    }
    let transform: FittedTransform;
    try {
      transform = parseFittedTransform(json);
    } catch (cause) {
      throw new IntegrityError(`${join(this.dir, 'transform.json')}: ${describeError(cause)}`, { cause });
    }
    return { name, version: actual, onnx, transform };
  }

  async current(name: string): Promise<string> {
    this.checkName(name);
    if (this.fixedVersion !== undefined) return this.fixedVersion;
    const { onnx, transformText } = await this.readFiles();
    return contentVersion(onnx, transformText);
  }

  private checkName(name: string): void {
    if (name !== this.name)
      throw new NotFoundError(`unknown model ${JSON.stringify(name)}; this server has ${this.name}`);
  }

  private async readFiles(): Promise<{ onnx: Uint8Array; transformText: string }> {
    const read = async (file: string) => {
      try {
        return await readFile(join(this.dir, file));
      } catch (cause) {
        throw new ValidationError(
          `cannot read ${join(this.dir, file)}: the model directory needs model.onnx and transform.json`,
          {
            cause,
          },
        );
      }
    };
    const [onnx, transform] = await Promise.all([read('model.onnx'), read('transform.json')]);
    return { onnx: new Uint8Array(onnx), transformText: transform.toString('utf8') };
  }
}

function contentVersion(onnx: Uint8Array, transformText: string): string {
  return createHash('sha256').update(onnx).update('\0').update(transformText).digest('hex').slice(0, 16);
}

/**
 * Models held in memory, for tests and embedding: `publish` adds a version and, by default, makes it current
 * (as moving the default alias would).
 */
export class MemoryModelSource implements ModelSource {
  private readonly models = new Map<string, { versions: Map<string, LoadedModelBundle>; current: string }>();

  /** Add (or replace) a version; `makeCurrent` (default true) points the model's default at it. */
  publish(bundle: LoadedModelBundle, makeCurrent = true): void {
    let entry = this.models.get(bundle.name);
    if (entry === undefined) {
      entry = { versions: new Map(), current: bundle.version };
      this.models.set(bundle.name, entry);
    }
    entry.versions.set(bundle.version, bundle);
    if (makeCurrent) entry.current = bundle.version;
  }

  async list(): Promise<string[]> {
    return [...this.models.keys()];
  }

  async load(name: string, version?: string): Promise<LoadedModelBundle> {
    const entry = this.entry(name);
    const wanted = version ?? entry.current;
    const bundle = entry.versions.get(wanted);
    if (bundle === undefined) throw new NotFoundError(`model ${name} has no version ${wanted}`);
    return bundle;
  }

  async current(name: string): Promise<string> {
    return this.entry(name).current;
  }

  private entry(name: string) {
    const entry = this.models.get(name);
    if (entry === undefined) throw new NotFoundError(`unknown model ${JSON.stringify(name)}`);
    return entry;
  }
}
