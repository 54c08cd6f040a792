import onnxProto from 'onnx-proto';
import { METADATA_KEYS, type Task } from './types.ts';

const { onnx } = onnxProto;
type IAttributeProto = onnxProto.onnx.IAttributeProto;
type INodeProto = onnxProto.onnx.INodeProto;
type ITensorProto = onnxProto.onnx.ITensorProto;
type IValueInfoProto = onnxProto.onnx.IValueInfoProto;

export const DataType = onnx.TensorProto.DataType;
const AttrType = onnx.AttributeProto.AttributeType;

/** The ONNX IR version and opsets every Kiln export declares (all supported by onnxruntime 1.30). */
export const IR_VERSION = 8;
export const OPSET_ONNX = 17;
export const OPSET_ML = 3;
export const ML_DOMAIN = 'ai.onnx.ml';

const encoder = new TextEncoder();

/** Typed constructors for node attributes. */
export const attr = {
  int: (name: string, i: number): IAttributeProto => ({ name, type: AttrType.INT, i }),
  float: (name: string, f: number): IAttributeProto => ({ name, type: AttrType.FLOAT, f }),
  string: (name: string, s: string): IAttributeProto => ({
    name,
    type: AttrType.STRING,
    s: encoder.encode(s),
  }),
  ints: (name: string, ints: ArrayLike<number>): IAttributeProto => ({
    name,
    type: AttrType.INTS,
    ints: Array.from(ints),
  }),
  floats: (name: string, floats: ArrayLike<number>): IAttributeProto => ({
    name,
    type: AttrType.FLOATS,
    floats: Array.from(floats),
  }),
  strings: (name: string, strings: readonly string[]): IAttributeProto => ({
    name,
    type: AttrType.STRINGS,
    strings: strings.map((s) => encoder.encode(s)),
  }),
  tensor: (name: string, t: ITensorProto): IAttributeProto => ({ name, type: AttrType.TENSOR, t }),
};

/** A node of the default (ai.onnx) or the ai.onnx.ml domain. */
export function node(
  opType: string,
  inputs: string[],
  outputs: string[],
  attributes: IAttributeProto[] = [],
  domain = '',
): INodeProto {
  return {
    opType,
    input: inputs,
    output: outputs,
    attribute: attributes,
    domain,
    name: `${opType}_${outputs[0]}`,
  };
}

/** A double tensor initializer (little-endian raw data, so the bytes are exact and deterministic). */
export function doubleTensor(name: string, dims: number[], values: ArrayLike<number>): ITensorProto {
  const data = Float64Array.from(values);
  return { name, dims, dataType: DataType.DOUBLE, rawData: new Uint8Array(data.buffer) };
}

/** A float32 tensor initializer. */
export function floatTensor(name: string, dims: number[], values: ArrayLike<number>): ITensorProto {
  const data = Float32Array.from(values);
  return { name, dims, dataType: DataType.FLOAT, rawData: new Uint8Array(data.buffer) };
}

/** An int64 tensor initializer. */
export function int64Tensor(name: string, dims: number[], values: readonly number[]): ITensorProto {
  const data = BigInt64Array.from(values, (v) => BigInt(v));
  return { name, dims, dataType: DataType.INT64, rawData: new Uint8Array(data.buffer) };
}

/** A tensor value-info; string dims are symbolic (e.g. 'N'). */
export function tensorInfo(name: string, elemType: number, dims: Array<number | string>): IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

export interface ExportSpec {
  graphName: string;
  task: Task;
  classes: string[];
  featureNames: string[];
  algorithm: string;
  nodes: INodeProto[];
  initializers?: ITensorProto[];
  /** Output value-infos, in order. */
  outputs: IValueInfoProto[];
  usesMlDomain: boolean;
}

/** Assemble and serialize a ModelProto with the `input` tensor [N, nFeatures] and Kiln's metadata. */
export function serializeModel(spec: ExportSpec): Uint8Array {
  const opsetImport = [{ domain: '', version: OPSET_ONNX }];
  if (spec.usesMlDomain) opsetImport.push({ domain: ML_DOMAIN, version: OPSET_ML });
  const model = onnx.ModelProto.create({
    irVersion: IR_VERSION,
    producerName: 'kiln',
    producerVersion: '1',
    opsetImport,
    graph: {
      name: spec.graphName,
      node: spec.nodes,
      initializer: spec.initializers ?? [],
      input: [tensorInfo('input', DataType.FLOAT, ['N', spec.featureNames.length])],
      output: spec.outputs,
    },
    metadataProps: [
      { key: METADATA_KEYS.task, value: spec.task },
      { key: METADATA_KEYS.classes, value: JSON.stringify(spec.classes) },
      { key: METADATA_KEYS.features, value: JSON.stringify(spec.featureNames) },
      { key: METADATA_KEYS.algorithm, value: spec.algorithm },
    ],
  });
  return onnx.ModelProto.encode(model).finish();
}

/** The standard classifier outputs: `probabilities` float [N, C] and `label` int64 [N]. */
export function classifierOutputs(nClasses: number): IValueInfoProto[] {
  return [
    tensorInfo('label', DataType.INT64, ['N']),
    tensorInfo('probabilities', DataType.FLOAT, ['N', nClasses]),
  ];
}

/** Nodes deriving `label` from `probabilities` by ArgMax, so ORT's label always agrees with the probabilities. */
export function labelFromProbabilities(): INodeProto[] {
  return [node('ArgMax', ['probabilities'], ['label'], [attr.int('axis', 1), attr.int('keepdims', 0)])];
}
