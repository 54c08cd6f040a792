/** Public surface of lib/ml: built-in trainers, ONNX export and the ONNX Runtime wrapper. */
export { type LoadOptions, OnnxModel, type Provider, type ProviderChoice, probeCuda } from './onnx-model.ts';
export { holdoutSplit } from './split.ts';
export {
  ALGORITHMS,
  type GbdtParams,
  hyperparameterSchemas,
  type LinearParams,
  parseHyperparameters,
  trainModel,
  validateTrainingSet,
} from './train.ts';
export {
  type Algorithm,
  argmaxRows,
  METADATA_KEYS,
  type ModelOutput,
  type Task,
  type TrainedModel,
  type TrainingSet,
} from './types.ts';
