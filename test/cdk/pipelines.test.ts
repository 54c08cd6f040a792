import { StateMachine, type StateMachineDefinition } from 'aws-local-stepfunctions';
import type { IConstruct } from 'constructs';
import { describe, expect, it } from 'vitest';
import { EtlStates } from '../../lib/pipelines/etl-pipeline.ts';
import { LAMBDA_TRANSIENT_ERRORS } from '../../lib/pipelines/lambda-task.ts';
import { TrainingStates } from '../../lib/pipelines/training-pipeline.ts';
import {
  type AslDefinition,
  allStates,
  definitionOf,
  flatten,
  logicalIdOf,
  property,
  stateNamed,
  synthesize,
} from './support.ts';

const { stack, json } = synthesize();
const etlId = logicalIdOf(stack, stack.etl.stateMachine);
const trainingId = logicalIdOf(stack, stack.training.stateMachine);
const etl = definitionOf(json, etlId);
const training = definitionOf(json, trainingId);
const fn = (construct: { function: IConstruct }) => `<${logicalIdOf(stack, construct.function)}.Arn>`;

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type Handler = (input: Json) => Promise<Json>;

/** Runs a synthesized definition locally; each Task state is answered by `handlers[stateName]`. */
async function execute(definition: AslDefinition, input: Json, handlers: Record<string, Handler>) {
  const machine = new StateMachine(definition as unknown as StateMachineDefinition, {
    validationOptions: { checkArn: false },
  });
  const retries: Record<string, number> = {};
  for (const [name, state] of allStates(definition)) if (state.Retry) retries[name] = 0;
  const execution = machine.run(input, {
    overrides: { taskResourceLocalHandlers: handlers, retryIntervalOverrides: retries },
  });
  return execution.result;
}

describe('ETL state machine', () => {
  it('runs Plan → ProcessShards (Distributed Map of ProcessShard) → Finalize → EtlSucceeded', () => {
    expect(etl.StartAt).toBe(EtlStates.plan);
    expect(stateNamed(etl, 'Plan')).toMatchObject({
      Type: 'Task',
      Next: 'ProcessShards',
      ResultPath: '$.plan',
    });
    expect(stateNamed(etl, 'ProcessShards')).toMatchObject({ Type: 'Map', Next: 'Finalize' });
    expect(stateNamed(etl, 'Finalize')).toMatchObject({
      Type: 'Task',
      Next: 'EtlSucceeded',
      ResultPath: '$.result',
    });
    expect(stateNamed(etl, 'EtlSucceeded').Type).toBe('Succeed');
    expect(stateNamed(etl, 'RecordFailure')).toMatchObject({ Type: 'Task', Next: 'EtlFailed' });
    expect(stateNamed(etl, 'EtlFailed')).toMatchObject({
      Type: 'Fail',
      ErrorPath: '$.error.Error',
      CausePath: '$.error.Cause',
    });
  });

  it('invokes each handler function directly, so its return value is the task result', () => {
    expect(stateNamed(etl, 'Plan').Resource).toBe(fn(stack.etl.planFunction));
    expect(stateNamed(etl, 'ProcessShard').Resource).toBe(fn(stack.etl.shardFunction));
    expect(stateNamed(etl, 'Finalize').Resource).toBe(fn(stack.etl.finalizeFunction));
    expect(stateNamed(etl, 'RecordFailure').Resource).toBe(fn(stack.failureFunction));
  });

  it('maps over the planned shards in state, without ItemReader, ResultWriter or ItemBatcher', () => {
    const map = stateNamed(etl, 'ProcessShards');
    expect(map).toMatchObject({
      ItemsPath: '$.plan.shards',
      ItemSelector: {
        'dataset.$': '$.plan.dataset',
        'runId.$': '$.plan.runId',
        'shard.$': '$$.Map.Item.Value',
        'options.$': '$.plan.options',
      },
      MaxConcurrency: 40,
      ResultPath: '$.shardResults',
      ItemProcessor: {
        ProcessorConfig: { Mode: 'DISTRIBUTED', ExecutionType: 'STANDARD' },
        StartAt: 'ProcessShard',
      },
    });
    expect(map).not.toHaveProperty('ItemReader');
    expect(map).not.toHaveProperty('ResultWriter');
    expect(map).not.toHaveProperty('ItemBatcher');
    // Zero tolerated failures is the service default, which CDK expresses by omitting the field.
    expect(map.ToleratedFailurePercentage ?? 0).toBe(0);
    expect(map).not.toHaveProperty('ToleratedFailureCount');
    expect(JSON.stringify(etl)).not.toContain('QueryLanguage');
  });

  it('retries transient Lambda errors on every Lambda task and routes failures to RecordFailure', () => {
    for (const name of ['Plan', 'ProcessShard', 'Finalize', 'RecordFailure']) {
      expect(stateNamed(etl, name).Retry).toEqual([
        {
          ErrorEquals: [...LAMBDA_TRANSIENT_ERRORS],
          IntervalSeconds: 2,
          MaxAttempts: 3,
          BackoffRate: 2,
          JitterStrategy: 'FULL',
        },
      ]);
    }
    for (const name of ['Plan', 'ProcessShards', 'Finalize']) {
      expect(stateNamed(etl, name).Catch).toEqual([
        { ErrorEquals: ['States.ALL'], ResultPath: '$.error', Next: 'RecordFailure' },
      ]);
    }
    expect(stateNamed(etl, 'RecordFailure').Parameters).toEqual({
      pipeline: 'etl',
      'input.$': '$',
      'error.$': '$.error',
    });
  });

  it('logs every execution event to an encrypted log group and traces with X-Ray', () => {
    const machine = json.Resources[etlId]?.Properties;
    expect(machine?.TracingConfiguration).toEqual({ Enabled: true });
    expect(machine?.LoggingConfiguration).toMatchObject({ Level: 'ALL', IncludeExecutionData: true });
    const logGroupId = logicalIdOf(stack, stack.etl.logGroup);
    expect(json.Resources[logGroupId]?.Properties?.KmsKeyId).toEqual({
      'Fn::GetAtt': [logicalIdOf(stack, stack.logKey.key), 'Arn'],
    });
  });

  it('executes locally: the plan lands at $.plan, shard results at $.shardResults, finalize sees both', async () => {
    const finalizeInputs: Json[] = [];
    const output = await execute(
      etl,
      { key: 'raw/churn/i-1/part-0.csv', trigger: { source: 's3', detailType: 'Object Created' } },
      {
        Plan: async (input) => {
          expect(input).toEqual({
            key: 'raw/churn/i-1/part-0.csv',
            trigger: { source: 's3', detailType: 'Object Created' },
          });
          return {
            dataset: 'churn',
            runId: 'run-1',
            shards: [
              { key: 'raw/churn/i-1/part-0.csv', format: 'csv' },
              { key: 'raw/churn/i-1/part-1.csv', format: 'csv' },
            ],
            rejected: [],
            options: { seed: 42, testFraction: 0.2 },
          };
        },
        ProcessShard: async (input) => {
          const item = input as { dataset: string; runId: string; shard: { key: string } };
          return { dataset: item.dataset, runId: item.runId, key: item.shard.key, rows: 10 };
        },
        Finalize: async (input) => {
          finalizeInputs.push(input);
          return { version: 'v-abc' };
        },
      },
    );
    expect(finalizeInputs).toEqual([
      {
        dataset: 'churn',
        runId: 'run-1',
        shardResults: [
          { dataset: 'churn', runId: 'run-1', key: 'raw/churn/i-1/part-0.csv', rows: 10 },
          { dataset: 'churn', runId: 'run-1', key: 'raw/churn/i-1/part-1.csv', rows: 10 },
        ],
        rejected: [],
        options: { seed: 42, testFraction: 0.2 },
      },
    ]);
    expect(output).toMatchObject({
      key: 'raw/churn/i-1/part-0.csv',
      plan: { dataset: 'churn', runId: 'run-1' },
      result: { version: 'v-abc' },
    });
  });

  it('executes locally: a failing shard skips Finalize, is recorded with its error, and fails the run', async () => {
    const recorded: Json[] = [];
    const run = execute(
      etl,
      { key: 'raw/churn/i-2/part-0.csv', trigger: { source: 's3', detailType: 'Object Created' } },
      {
        Plan: async () => ({
          dataset: 'churn',
          runId: 'run-2',
          shards: [{ key: 'raw/churn/i-2/part-0.csv', format: 'csv' }],
          rejected: [],
          options: { seed: 42, testFraction: 0.2 },
        }),
        ProcessShard: async () => {
          const error = new Error('column age: expected integer, got "abc"');
          error.name = 'ValidationError';
          throw error;
        },
        Finalize: async () => {
          throw new Error('finalize must not run after a failed shard');
        },
        RecordFailure: async (input) => {
          recorded.push(input);
          return { recorded: true };
        },
      },
    );
    await expect(run).rejects.toThrow();
    expect(recorded).toHaveLength(1);
    expect(recorded[0]).toMatchObject({
      pipeline: 'etl',
      input: { key: 'raw/churn/i-2/part-0.csv', plan: { runId: 'run-2' } },
      error: { Error: expect.any(String) },
    });
  });
});

describe('Training state machine', () => {
  it('runs Prepare → Train → Evaluate → Gate → RegisterChampion | RegisterCandidate → TrainingSucceeded', () => {
    expect(training.StartAt).toBe(TrainingStates.prepare);
    expect(stateNamed(training, 'Prepare')).toMatchObject({ Next: 'Train', ResultPath: '$.job' });
    expect(stateNamed(training, 'Train')).toMatchObject({ Next: 'Evaluate', ResultPath: '$.training' });
    expect(stateNamed(training, 'Evaluate')).toMatchObject({ Next: 'Gate', ResultPath: '$.evaluation' });
    expect(stateNamed(training, 'Gate')).toMatchObject({
      Type: 'Choice',
      Choices: [
        {
          And: [
            { Variable: '$.evaluation.gate.passed', IsPresent: true },
            { Variable: '$.evaluation.gate.passed', BooleanEquals: true },
          ],
          Next: 'RegisterChampion',
        },
      ],
      Default: 'RegisterCandidate',
    });
    for (const [name, promote] of [
      ['RegisterChampion', true],
      ['RegisterCandidate', false],
    ] as const) {
      expect(stateNamed(training, name)).toMatchObject({
        Resource: fn(stack.training.registerFunction),
        Parameters: { 'input.$': '$', promote },
        ResultPath: '$.registration',
        Next: 'TrainingSucceeded',
      });
    }
    expect(stateNamed(training, 'RecordTrainingFailure')).toMatchObject({
      Resource: fn(stack.failureFunction),
      Parameters: { pipeline: 'training', 'input.$': '$', 'error.$': '$.error' },
      Next: 'TrainingFailed',
    });
    expect(stateNamed(training, 'TrainingFailed').Type).toBe('Fail');
  });

  it('runs a SageMaker training job synchronously with the job spec from $.job', () => {
    const train = stateNamed(training, 'Train');
    expect(train.Resource).toBe('arn:<AWS::Partition>:states:::sagemaker:createTrainingJob.sync');
    expect(train.ResultSelector).toEqual({
      'modelArtifacts.$': '$.ModelArtifacts.S3ModelArtifacts',
      'trainingJobName.$': '$.TrainingJobName',
      'startedAt.$': '$.TrainingStartTime',
      'endedAt.$': '$.TrainingEndTime',
    });
    const keyArn = `<${logicalIdOf(stack, stack.lake.key)}.Arn>`;
    expect(train.Parameters).toMatchObject({
      'TrainingJobName.$': '$.job.trainingJobName',
      'HyperParameters.$': '$.job.hyperparameters',
      RoleArn: `<${logicalIdOf(stack, stack.training.trainingRole)}.Arn>`,
      // Prepare picks the image (the built-in one unless the request brings its own) and the instance type.
      AlgorithmSpecification: { TrainingInputMode: 'File', 'TrainingImage.$': '$.job.trainingImage' },
      InputDataConfig: [
        {
          ChannelName: 'train',
          DataSource: { S3DataSource: { 'S3Uri.$': '$.job.channels.train', S3DataType: 'S3Prefix' } },
        },
        {
          ChannelName: 'test',
          DataSource: { S3DataSource: { 'S3Uri.$': '$.job.channels.test', S3DataType: 'S3Prefix' } },
        },
      ],
      OutputDataConfig: { 'S3OutputPath.$': '$.job.outputUri', KmsKeyId: keyArn },
      ResourceConfig: { InstanceCount: 1, 'InstanceType.$': '$.job.instanceType', VolumeKmsKeyId: keyArn },
      StoppingCondition: { MaxRuntimeInSeconds: 4 * 3600 },
      EnableNetworkIsolation: true,
    });
    // The default image, handed to Prepare, is the asset built from containers/training/Dockerfile.
    const prepare = json.Resources[logicalIdOf(stack, stack.training.prepareFunction.function)];
    const variables = property<{ Variables: Record<string, unknown> }>(prepare, 'Environment').Variables;
    expect(flatten(variables.KILN_TRAINING_IMAGE)).toMatch(/\.dkr\.ecr\..*container-assets.*:[0-9a-f]{64}$/);
    expect(variables.KILN_TRAINING_INSTANCE_TYPE).toBe('ml.m5.xlarge');
  });

  it('catches every step into RecordTrainingFailure and retries the Lambda steps', () => {
    for (const name of ['Prepare', 'Train', 'Evaluate', 'RegisterChampion', 'RegisterCandidate']) {
      expect(stateNamed(training, name).Catch).toEqual([
        { ErrorEquals: ['States.ALL'], ResultPath: '$.error', Next: 'RecordTrainingFailure' },
      ]);
    }
    for (const name of [
      'Prepare',
      'Evaluate',
      'RegisterChampion',
      'RegisterCandidate',
      'RecordTrainingFailure',
    ]) {
      expect(stateNamed(training, name).Retry?.[0]).toMatchObject({
        ErrorEquals: [...LAMBDA_TRANSIENT_ERRORS],
      });
    }
  });

  const runTraining = (passed: boolean | undefined) => {
    const registrations: Json[] = [];
    const result = execute(
      training,
      { dataset: 'churn', target: 'churned' },
      {
        Prepare: async () => ({
          trainingJobName: 'kiln-churn-1',
          channels: { train: 's3://lake/curated/churn/v1/train/', test: 's3://lake/curated/churn/v1/test/' },
          outputUri: 's3://lake/models-staging/churn/',
          hyperparameters: { rounds: '50' },
          trainingImage: 'kiln/training:builtin',
          instanceType: 'ml.m5.xlarge',
        }),
        Train: async (request) => {
          expect(request).toMatchObject({
            TrainingJobName: 'kiln-churn-1',
            HyperParameters: { rounds: '50' },
            OutputDataConfig: { S3OutputPath: 's3://lake/models-staging/churn/' },
            AlgorithmSpecification: { TrainingImage: 'kiln/training:builtin' },
            ResourceConfig: { InstanceType: 'ml.m5.xlarge' },
          });
          return {
            TrainingJobName: 'kiln-churn-1',
            TrainingStartTime: '2024-01-01T00:00:00.000Z',
            TrainingEndTime: '2024-01-01T00:01:00.000Z',
            ModelArtifacts: {
              S3ModelArtifacts: 's3://lake/models-staging/churn/kiln-churn-1/output/model.tar.gz',
            },
          };
        },
        Evaluate: async (): Promise<Json> =>
          passed === undefined ? { metrics: {} } : { gate: { passed }, metrics: { auc: 0.9 } },
        RegisterChampion: async (input) => {
          registrations.push(input);
          return { stage: 'production' };
        },
        RegisterCandidate: async (input) => {
          registrations.push(input);
          return { stage: 'candidate' };
        },
      },
    );
    return { result, registrations };
  };

  it('executes locally: a passed gate registers a champion with the whole state', async () => {
    const { result, registrations } = runTraining(true);
    const output = await result;
    expect(output).toMatchObject({
      job: { trainingJobName: 'kiln-churn-1' },
      training: {
        modelArtifacts: 's3://lake/models-staging/churn/kiln-churn-1/output/model.tar.gz',
        trainingJobName: 'kiln-churn-1',
      },
      evaluation: { gate: { passed: true } },
      registration: { stage: 'production' },
    });
    expect(registrations).toEqual([
      expect.objectContaining({
        promote: true,
        input: expect.objectContaining({ job: expect.any(Object), training: expect.any(Object) }),
      }),
    ]);
  });

  it('executes locally: a failed or missing gate registers a candidate', async () => {
    for (const passed of [false, undefined]) {
      const { result, registrations } = runTraining(passed);
      await expect(result).resolves.toMatchObject({ registration: { stage: 'candidate' } });
      expect(registrations).toEqual([expect.objectContaining({ promote: false })]);
    }
  });

  it('keeps state-machine resources resolvable: every Lambda task targets a function of this stack', () => {
    const functionArns = new Set(
      Object.entries(json.Resources)
        .filter(([, resource]) => resource.Type === 'AWS::Lambda::Function')
        .map(([id]) => `<${id}.Arn>`),
    );
    for (const definition of [etl, training]) {
      for (const [name, state] of allStates(definition)) {
        if (state.Type !== 'Task' || name === 'Train') continue;
        expect(functionArns.has(String(flatten(state.Resource))), name).toBe(true);
      }
    }
  });
});
