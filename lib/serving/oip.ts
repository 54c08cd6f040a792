import { z } from 'zod';
import { ValidationError } from '../core/errors.ts';
import type { ColumnType } from '../core/schema.ts';
import type { InputColumn } from '../core/transform.ts';
import type { ModelOutput } from '../ml/types.ts';
import { PayloadTooLargeError } from './errors.ts';
import type { Deployment } from './model-host.ts';

/** Open Inference Protocol V2 (KServe) REST payloads: request parsing and response shapes. */

const INT_TYPES = ['INT8', 'INT16', 'INT32', 'INT64', 'UINT8', 'UINT16', 'UINT32', 'UINT64'] as const;
const FLOAT_TYPES = ['FP16', 'FP32', 'FP64'] as const;

/** Tensor datatypes each column type accepts, the first being the one metadata advertises. */
const ACCEPTED: Record<ColumnType, readonly string[]> = {
  number: ['FP64', 'FP32', 'FP16', ...INT_TYPES],
  integer: ['INT64', ...INT_TYPES.filter((t) => t !== 'INT64'), ...FLOAT_TYPES],
  boolean: ['BOOL', ...INT_TYPES],
  string: ['BYTES'],
  timestamp: ['BYTES'],
};

/** The datatype metadata advertises for an input column. */
export function datatypeOf(type: ColumnType): string {
  return ACCEPTED[type][0] as string;
}

const ParametersSchema = z.record(z.string(), z.union([z.string(), z.number(), z.boolean(), z.null()]));

const RequestInputSchema = z.object({
  name: z.string().min(1),
  shape: z.array(z.number().int().nonnegative()).min(1).max(2),
  datatype: z.string().min(1),
  parameters: ParametersSchema.optional(),
  data: z.array(z.unknown()),
});

const InferenceRequestSchema = z.object({
  id: z.string().optional(),
  parameters: ParametersSchema.optional(),
  inputs: z.array(RequestInputSchema).min(1, { error: 'inputs must hold at least one tensor' }),
  outputs: z.array(z.object({ name: z.string().min(1), parameters: ParametersSchema.optional() })).optional(),
});

export interface ParsedInferRequest {
  id: string | undefined;
  rows: Record<string, unknown>[];
  outputs: string[] | undefined;
}

/** Output tensors a model produces. */
export function outputNames(deployment: Deployment): string[] {
  return deployment.model.task === 'regression' ? ['predictions'] : ['label', 'probabilities'];
}

function describeIssue(error: z.ZodError): string {
  const issue = error.issues[0];
  if (issue === undefined) return 'invalid inference request';
  const path = issue.path.length ? `${issue.path.map(String).join('.')}: ` : '';
  return `${path}${issue.message}`;
}

/** Flattens tensor data nested at most `depth` levels (the tensor's rank), refusing deeper nesting. */
function flatten(data: unknown[], depth: number, name: string): unknown[] {
  if (!data.some(Array.isArray)) return data;
  if (depth <= 1) throw new ValidationError(`input ${name}: data is nested deeper than its shape`);
  const out: unknown[] = [];
  for (const item of data) {
    if (Array.isArray(item)) {
      for (const inner of flatten(item, depth - 1, name)) out.push(inner);
    } else {
      out.push(item);
    }
  }
  return out;
}

function checkElement(value: unknown, datatype: string, input: string, index: number): void {
  // JSON null stands for a missing value, as it does in /invocations; the column's nullability decides.
  if (value === null) return;
  let ok: boolean;
  if (datatype === 'BOOL') ok = typeof value === 'boolean';
  else if (datatype === 'BYTES') ok = typeof value === 'string';
  else if (datatype.startsWith('UINT'))
    ok = typeof value === 'number' && Number.isInteger(value) && value >= 0;
  else if (datatype.startsWith('INT')) ok = typeof value === 'number' && Number.isInteger(value);
  else ok = typeof value === 'number';
  if (!ok) {
    const shown =
      typeof value === 'string' ? JSON.stringify(value.slice(0, 40)) : JSON.stringify(value)?.slice(0, 40);
    throw new ValidationError(`input ${input}: data[${index}] = ${shown} is not a ${datatype} value`);
  }
}

/**
 * Turns a V2 inference request into raw rows: one input tensor per column, named after the column, shape
 * [N] or [N, 1], all with the same N. Columns left out are missing (null) in every row.
 */
export function parseInferRequest(
  json: unknown,
  inputs: readonly InputColumn[],
  maxRows: number,
  produced: string[],
): ParsedInferRequest {
  const parsed = InferenceRequestSchema.safeParse(json);
  if (!parsed.success) throw new ValidationError(describeIssue(parsed.error), { cause: parsed.error });
  const request = parsed.data;
  const byName = new Map(inputs.map((c) => [c.name, c]));
  let nRows: number | undefined;
  const columns: Array<{ name: string; data: unknown[] }> = [];
  const seen = new Set<string>();
  for (const tensor of request.inputs) {
    const column = byName.get(tensor.name);
    if (column === undefined) {
      throw new ValidationError(
        `unknown input ${JSON.stringify(tensor.name)}; the model's inputs are ${inputs.map((c) => c.name).join(', ')}`,
      );
    }
    if (seen.has(tensor.name)) throw new ValidationError(`input ${tensor.name} is given twice`);
    seen.add(tensor.name);
    const accepted = ACCEPTED[column.type];
    if (!accepted.includes(tensor.datatype)) {
      throw new ValidationError(
        `input ${tensor.name} (${column.type}) has datatype ${JSON.stringify(tensor.datatype)}; allowed: ${accepted.join(', ')}`,
      );
    }
    const [n, width] = tensor.shape as [number, number | undefined];
    if (width !== undefined && width !== 1) {
      throw new ValidationError(
        `input ${tensor.name}: shape ${JSON.stringify(tensor.shape)} must be [N] or [N, 1]`,
      );
    }
    if (n > maxRows) {
      throw new PayloadTooLargeError(
        `input ${tensor.name} has ${n} rows; the limit is ${maxRows} per request`,
      );
    }
    const data = flatten(tensor.data, tensor.shape.length, tensor.name);
    if (data.length !== n) {
      throw new ValidationError(
        `input ${tensor.name}: shape ${JSON.stringify(tensor.shape)} needs ${n} values, data has ${data.length}`,
      );
    }
    if (nRows !== undefined && n !== nRows) {
      throw new ValidationError(`input ${tensor.name} has ${n} rows; other inputs have ${nRows}`);
    }
    nRows = n;
    for (let i = 0; i < data.length; i++) checkElement(data[i], tensor.datatype, tensor.name, i);
    columns.push({ name: tensor.name, data });
  }
  if (!nRows) throw new ValidationError('empty batch: the input tensors have no rows');
  const rows: Record<string, unknown>[] = new Array(nRows);
  for (let r = 0; r < nRows; r++) {
    const row: Record<string, unknown> = {};
    for (const c of columns) row[c.name] = c.data[r];
    rows[r] = row;
  }
  let outputs: string[] | undefined;
  if (request.outputs !== undefined) {
    outputs = request.outputs.map((o) => o.name);
    const unknown = outputs.find((o) => !produced.includes(o));
    if (unknown !== undefined) {
      throw new ValidationError(
        `unknown output ${JSON.stringify(unknown)}; the model produces ${produced.join(', ')}`,
      );
    }
  }
  return { id: request.id, rows, outputs };
}

interface ResponseOutput {
  name: string;
  shape: number[];
  datatype: string;
  data: Array<number | string>;
}

/** The output tensors of a V2 inference response, restricted to `wanted` when given. */
export function inferOutputs(
  output: ModelOutput,
  classes: readonly string[],
  wanted: string[] | undefined,
): ResponseOutput[] {
  const n = output.nRows;
  const outs: ResponseOutput[] = [];
  const want = (name: string) => wanted === undefined || wanted.includes(name);
  if (output.values !== undefined) {
    if (want('predictions')) {
      outs.push({ name: 'predictions', shape: [n], datatype: 'FP32', data: Array.from(output.values) });
    }
    return outs;
  }
  if (want('label')) {
    const labels = output.labels ?? new Int32Array(0);
    outs.push({
      name: 'label',
      shape: [n],
      datatype: 'BYTES',
      data: Array.from(labels, (k) => classes[k] ?? ''),
    });
  }
  if (want('probabilities')) {
    outs.push({
      name: 'probabilities',
      shape: [n, classes.length],
      datatype: 'FP32',
      data: Array.from(output.probabilities ?? new Float32Array(0)),
    });
  }
  return outs;
}

/** `$metadata_model_response` for a loaded version. */
export function modelMetadata(deployment: Deployment) {
  const { model } = deployment;
  const outputs =
    model.task === 'regression'
      ? [{ name: 'predictions', datatype: 'FP32', shape: [-1] }]
      : [
          { name: 'label', datatype: 'BYTES', shape: [-1] },
          { name: 'probabilities', datatype: 'FP32', shape: [-1, model.classes.length] },
        ];
  return {
    name: deployment.name,
    versions: [deployment.version],
    platform: 'onnxruntime',
    inputs: deployment.inputs.map((c) => ({ name: c.name, datatype: datatypeOf(c.type), shape: [-1] })),
    outputs,
    properties: {
      execution_provider: model.provider,
      execution_provider_reason: model.providerReason,
      task: model.task,
      classes: JSON.stringify(model.classes),
      algorithm: model.algorithm,
      features: String(model.nFeatures),
      transform_hash: deployment.transform.hash,
      loaded_at: deployment.loadedAt,
    },
  };
}
