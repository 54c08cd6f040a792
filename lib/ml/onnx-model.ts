import { existsSync, readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import onnxProto from 'onnx-proto';
import { InferenceSession, listSupportedBackends, Tensor } from 'onnxruntime-node';
import { IntegrityError, ValidationError } from '../core/errors.ts';
import { argmaxRows, METADATA_KEYS, type ModelOutput, type Task } from './types.ts';

export { argmaxRows, type ModelOutput, type Task } from './types.ts';

const { onnx } = onnxProto;

export type ProviderChoice = 'auto' | 'cpu' | 'cuda';
export type Provider = 'cuda' | 'cpu';

export interface LoadOptions {
  /** `auto` (default) uses CUDA when the machine and ONNX Runtime can, otherwise CPU; `cuda` fails if it cannot. */
  provider?: ProviderChoice;
  /** Threads ONNX Runtime may use inside one operator; default lets ONNX Runtime decide. */
  intraOpNumThreads?: number;
}

/** Why `auto` chose what it chose; surfaced by the server and the CLI. */
export interface CudaProbe {
  available: boolean;
  reason: string;
}

const TASKS: readonly Task[] = ['binary', 'multiclass', 'regression'];

/**
 * Decide whether the CUDA execution provider can be tried here: a GPU device must be visible and
 * onnxruntime-node must have its CUDA provider library next to the binding (it is not bundled in the
 * npm package; `ONNXRUNTIME_NODE_INSTALL=cuda12` downloads it).
 */
export function probeCuda(env: NodeJS.ProcessEnv = process.env): CudaProbe {
  const forced = env.KILN_EXECUTION_PROVIDER?.toLowerCase();
  if (forced === 'cpu') return { available: false, reason: 'KILN_EXECUTION_PROVIDER=cpu' };
  const built = listSupportedBackends().some((b) => b.name === 'cuda');
  if (!built)
    return { available: false, reason: 'this onnxruntime-node build has no CUDA execution provider' };
  const providerLib = findCudaProviderLibrary();
  if (providerLib === undefined) {
    return {
      available: false,
      reason: 'libonnxruntime_providers_cuda.so is not installed next to the onnxruntime-node binding',
    };
  }
  const device =
    existsSync('/dev/nvidia0') || existsSync('/proc/driver/nvidia/version') || env.NVIDIA_VISIBLE_DEVICES;
  if (!device && forced !== 'cuda') return { available: false, reason: 'no NVIDIA device visible' };
  return {
    available: true,
    reason: forced === 'cuda' ? 'KILN_EXECUTION_PROVIDER=cuda' : `NVIDIA device and ${providerLib}`,
  };
}

function findCudaProviderLibrary(): string | undefined {
  try {
    const require = createRequire(import.meta.url);
    const root = dirname(require.resolve('onnxruntime-node/package.json'));
    const binDir = join(root, 'bin', 'napi-v6', process.platform, process.arch);
    if (!existsSync(binDir)) return undefined;
    return readdirSync(binDir).find((f) => f.startsWith('libonnxruntime_providers_cuda'));
  } catch {
    return undefined;
  }
}

interface KilnMetadata {
  task: Task;
  classes: string[];
  featureNames: string[];
  algorithm: string;
}

function parseJsonStringArray(text: string | undefined, key: string): string[] | undefined {
  if (text === undefined) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (cause) {
    throw new IntegrityError(`ONNX metadata ${key} is not JSON: ${text.slice(0, 80)}`, { cause });
  }
  if (!Array.isArray(parsed) || !parsed.every((v) => typeof v === 'string')) {
    throw new IntegrityError(
      `ONNX metadata ${key} must be a JSON array of strings, got ${text.slice(0, 80)}`,
    );
  }
  return parsed;
}

function readMetadata(bytes: Uint8Array): Map<string, string> {
  let model: onnxProto.onnx.ModelProto;
  try {
    model = onnx.ModelProto.decode(bytes);
  } catch (cause) {
    throw new IntegrityError('model bytes are not an ONNX ModelProto', { cause });
  }
  const props = new Map<string, string>();
  for (const p of model.metadataProps) {
    if (p.key) props.set(p.key, p.value ?? '');
  }
  return props;
}

function dimOf(meta: InferenceSession.ValueMetadata | undefined, axis: number): number | undefined {
  if (meta === undefined || !meta.isTensor) return undefined;
  const d = meta.shape[axis];
  return typeof d === 'number' && d > 0 ? d : undefined;
}

/** An ONNX model loaded into ONNX Runtime, with the task, classes and features the exporter recorded. */
export class OnnxModel {
  private constructor(
    private session: InferenceSession | undefined,
    readonly provider: Provider,
    /** Why this provider was chosen (e.g. "no NVIDIA device visible"). */
    readonly providerReason: string,
    readonly task: Task,
    readonly classes: string[],
    readonly nFeatures: number,
    readonly featureNames: string[],
    readonly algorithm: string,
    private readonly inputName: string,
    private readonly outputName: string,
  ) {}

  /** Load serialized ONNX bytes or a file path and open an inference session on the chosen provider. */
  static async load(model: Uint8Array | string, opts: LoadOptions = {}): Promise<OnnxModel> {
    const choice = opts.provider ?? 'auto';
    if (!['auto', 'cpu', 'cuda'].includes(choice)) {
      throw new ValidationError(`provider must be one of auto, cpu, cuda; got ${String(choice)}`);
    }
    let bytes: Uint8Array;
    if (typeof model === 'string') {
      try {
        bytes = new Uint8Array(await readFile(model));
      } catch (cause) {
        throw new ValidationError(`cannot read ONNX model file ${model}`, { cause });
      }
    } else {
      bytes = model;
    }
    const props = readMetadata(bytes);

    const base: InferenceSession.SessionOptions = { graphOptimizationLevel: 'all' };
    if (opts.intraOpNumThreads !== undefined) base.intraOpNumThreads = opts.intraOpNumThreads;
    let session: InferenceSession | undefined;
    let provider: Provider = 'cpu';
    let reason: string;
    const probe = choice === 'cpu' ? { available: false, reason: 'cpu requested' } : probeCuda();
    if (choice === 'cuda' || probe.available) {
      try {
        session = await InferenceSession.create(bytes, { ...base, executionProviders: ['cuda', 'cpu'] });
        provider = 'cuda';
        reason = probe.available ? probe.reason : 'cuda requested';
      } catch (cause) {
        if (choice === 'cuda') {
          throw new ValidationError(`CUDA execution provider requested but unavailable (${probe.reason})`, {
            cause,
          });
        }
        reason = `CUDA session failed, fell back to CPU: ${cause instanceof Error ? cause.message.split('\n')[0] : String(cause)}`;
      }
    } else {
      reason = probe.reason;
    }
    if (session === undefined) {
      try {
        session = await InferenceSession.create(bytes, { ...base, executionProviders: ['cpu'] });
      } catch (cause) {
        throw new IntegrityError(
          `ONNX Runtime rejected the model: ${cause instanceof Error ? cause.message : String(cause)}`,
          { cause },
        );
      }
    }
    try {
      const meta = OnnxModel.describe(session, props);
      const inputName = session.inputNames.includes('input') ? 'input' : session.inputNames[0];
      if (inputName === undefined || session.inputNames.length !== 1) {
        throw new IntegrityError(
          `model must have exactly one input tensor, has ${session.inputNames.length}: ${session.inputNames.join(', ')}`,
        );
      }
      const wanted = meta.task === 'regression' ? 'variable' : 'probabilities';
      const outputName = session.outputNames.includes(wanted)
        ? wanted
        : meta.task === 'regression' && session.outputNames.length === 1
          ? session.outputNames[0]
          : undefined;
      if (outputName === undefined) {
        throw new IntegrityError(
          `${meta.task} model must have an output named ${wanted}; has ${session.outputNames.join(', ')}`,
        );
      }
      const inputMeta = session.inputMetadata[session.inputNames.indexOf(inputName)];
      const nFeatures = meta.featureNames.length || dimOf(inputMeta, 1);
      if (nFeatures === undefined) {
        throw new IntegrityError(
          'cannot tell the number of features: no kiln.features metadata and no fixed input width',
        );
      }
      const featureNames =
        meta.featureNames.length > 0
          ? meta.featureNames
          : Array.from({ length: nFeatures }, (_, i) => `f${i}`);
      return new OnnxModel(
        session,
        provider,
        reason,
        meta.task,
        meta.classes,
        nFeatures,
        featureNames,
        meta.algorithm,
        inputName,
        outputName,
      );
    } catch (error) {
      await session.release();
      throw error;
    }
  }

  /** Task, classes and features from Kiln metadata; models from elsewhere get them inferred from outputs. */
  private static describe(session: InferenceSession, props: Map<string, string>): KilnMetadata {
    const rawTask = props.get(METADATA_KEYS.task);
    let classes = parseJsonStringArray(props.get(METADATA_KEYS.classes), METADATA_KEYS.classes);
    const featureNames =
      parseJsonStringArray(props.get(METADATA_KEYS.features), METADATA_KEYS.features) ?? [];
    const algorithm = props.get(METADATA_KEYS.algorithm) ?? 'external';
    let task: Task;
    if (rawTask !== undefined) {
      if (!TASKS.includes(rawTask as Task)) {
        throw new IntegrityError(
          `ONNX metadata ${METADATA_KEYS.task} must be one of ${TASKS.join(', ')}, got ${rawTask}`,
        );
      }
      task = rawTask as Task;
    } else if (session.outputNames.includes('probabilities')) {
      const width = dimOf(session.outputMetadata[session.outputNames.indexOf('probabilities')], 1);
      const n = classes?.length ?? width;
      if (n === undefined)
        throw new IntegrityError('cannot tell the number of classes of a model without kiln.classes');
      task = n === 2 ? 'binary' : 'multiclass';
      classes ??= Array.from({ length: n }, (_, i) => String(i));
    } else {
      task = 'regression';
    }
    if (task === 'regression') classes = [];
    else if (classes === undefined || classes.length < 2) {
      throw new IntegrityError(`a ${task} model needs ${METADATA_KEYS.classes} with at least two classes`);
    } else if ((task === 'binary') !== (classes.length === 2)) {
      throw new IntegrityError(
        `task ${task} does not match ${classes.length} classes in ${METADATA_KEYS.classes}`,
      );
    }
    return { task, classes, featureNames, algorithm };
  }

  /** Score a row-major [nRows x nFeatures] float32 batch; labels are the argmax of the probabilities. */
  async run(features: Float32Array, nRows: number): Promise<ModelOutput> {
    const session = this.session;
    if (session === undefined) throw new ValidationError('OnnxModel.run called after release()');
    if (!Number.isInteger(nRows) || nRows < 0) {
      throw new ValidationError(`nRows must be a non-negative integer, got ${nRows}`);
    }
    if (features.length !== nRows * this.nFeatures) {
      throw new ValidationError(
        `features has ${features.length} values; expected nRows x nFeatures = ${nRows} x ${this.nFeatures} = ${nRows * this.nFeatures}`,
      );
    }
    if (nRows === 0) return this.empty();
    const input = new Tensor('float32', features, [nRows, this.nFeatures]);
    const results = await session.run({ [this.inputName]: input }, [this.outputName]);
    const out = results[this.outputName];
    if (out === undefined) throw new IntegrityError(`ONNX Runtime returned no ${this.outputName} output`);
    const data = out.data;
    const values =
      data instanceof Float32Array ? data : Float32Array.from(data as ArrayLike<number>, (v) => Number(v));
    if (this.task === 'regression') {
      if (values.length !== nRows) {
        throw new IntegrityError(`regression output has ${values.length} values for ${nRows} rows`);
      }
      return { task: this.task, nRows, values: new Float32Array(values) };
    }
    const nClasses = this.classes.length;
    if (values.length !== nRows * nClasses) {
      throw new IntegrityError(
        `probabilities output has ${values.length} values; expected ${nRows} x ${nClasses}`,
      );
    }
    const probabilities = new Float32Array(values);
    return { task: this.task, nRows, probabilities, labels: argmaxRows(probabilities, nRows, nClasses) };
  }

  private empty(): ModelOutput {
    if (this.task === 'regression') return { task: this.task, nRows: 0, values: new Float32Array(0) };
    return { task: this.task, nRows: 0, probabilities: new Float32Array(0), labels: new Int32Array(0) };
  }

  /** Free the native session; later `run` calls throw. Safe to call twice. */
  async release(): Promise<void> {
    const session = this.session;
    this.session = undefined;
    if (session !== undefined) await session.release();
  }
}
