import { Aws, Duration, Stack, Validations } from 'aws-cdk-lib';
import type * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { Construct } from 'constructs';
import { EventTypes } from '../core/events.ts';
import { CATCH_ALL, invokeLambda } from '../pipelines/lambda-task.ts';
import { LakePrefix } from './data-lake.ts';
import { INFERENCE_VARIANT_NAME, type InferenceEndpoint } from './inference-endpoint.ts';
import { KilnNodeFunction } from './kiln-function.ts';
import { LogEncryptionKey } from './log-key.ts';
import {
  acknowledgeGrantActions,
  acknowledgeInvokeVersions,
  acknowledgePrefixGrants,
  BUCKET_GRANT_ACTIONS,
} from './nag.ts';
import { assertIntegerInRange } from './validate.ts';

/** State names of the retraining state machine; the local runtime starts it at the first. */
export const RetrainingStates = {
  debounce: 'DebounceWindow',
  etl: 'RunEtl',
  plan: 'PlanRetraining',
  shouldTrain: 'ShouldTrain',
  train: 'RunTraining',
  record: 'RecordRun',
  failed: 'RetrainingFailed',
  done: 'RetrainingDone',
} as const;

/** Lake prefixes of the model-update records. */
export const UpdatesPrefix = {
  /** Debounce windows, the events that joined them, dataset claims and run records. */
  triggers: `${LakePrefix.runs}triggers/`,
  /** Rollout records (canary / shadow deployments). */
  deployments: `${LakePrefix.runs}deployments/`,
} as const;

/** Properties of {@link ModelUpdates}. */
export interface ModelUpdatesProps {
  /** The lake (registry/ and curated/ read, runs/ and models/ written). */
  readonly lakeBucket: s3.IBucket;
  /** The platform bus: EtlRunSucceeded, DriftDetected, QualityDropped and AliasMoved arrive here. */
  readonly bus: events.IEventBus;
  /** The ETL pipeline a retraining run starts with (anything landed but not curated yet). */
  readonly etlStateMachine: sfn.IStateMachine;
  /** The training pipeline a retraining run starts. */
  readonly trainingStateMachine: sfn.IStateMachine;
  /** Events within this long of a window's first event start one run (1 s to 24 h). @default Duration.minutes(10) */
  readonly debounceWindow?: Duration;
  /** When the periodic retraining check runs (rules on the default bus). @default events.Schedule.rate(Duration.days(1)) */
  readonly schedule?: events.Schedule;
  /** Create the schedule rule enabled. @default true */
  readonly scheduleEnabled?: boolean;
  /**
   * The SageMaker endpoint challengers are rolled out to. Without it (Lambda serving), no deploy function is
   * created: the Lambda model host follows the `champion` alias, and promotion stays with the registry.
   * @default - none
   */
  readonly endpoint?: InferenceEndpoint;
  /**
   * Alarms that roll a deployment back besides the endpoint's 5XX and latency alarms: the model-quality and
   * prediction-drift alarms of lib/constructs/monitoring.ts (`Monitoring.rollbackAlarms`; duplicates of the
   * endpoint's own alarms are dropped).
   * @default - none
   */
  readonly rollbackAlarms?: readonly cloudwatch.IAlarm[];
  /** Share of endpoint capacity the challenger gets first (1–50 %). @default 10 */
  readonly canaryPercentage?: number;
  /** How long the canary bakes on live traffic before full traffic (0–3600 s). @default Duration.minutes(10) */
  readonly canaryBakeTime?: Duration;
  /** Key for the execution-log group. @default - a new {@link LogEncryptionKey} */
  readonly logEncryptionKey?: LogEncryptionKey;
  /** Retention of execution and handler logs. @default logs.RetentionDays.ONE_MONTH */
  readonly logRetention?: logs.RetentionDays;
}

/**
 * Event-triggered retraining and safe model updates. A debouncing trigger function turns new curated data,
 * drift, quality drops and a schedule into at most one retraining run per model and window (a state machine
 * whose execution name is derived from the window, so Step Functions rejects duplicates); with an endpoint,
 * a deploy function rolls a gate-passing challenger out through SageMaker deployment guardrails (blue/green
 * canary with auto-rollback on error, latency, drift and quality alarms) and promotes it in the registry
 * only once the endpoint took it.
 */
export class ModelUpdates extends Construct {
  /** `functions/updates/trigger.ts`: the debouncing trigger. */
  public readonly triggerFunction: KilnNodeFunction;
  /** `functions/updates/plan.ts`. */
  public readonly planFunction: KilnNodeFunction;
  /** `functions/updates/record.ts`. */
  public readonly recordFunction: KilnNodeFunction;
  /** Wait for the window, ETL, plan, train, record. */
  public readonly stateMachine: sfn.StateMachine;
  /** EtlRunSucceeded → trigger. */
  public readonly dataRule: events.Rule;
  /** DriftDetected, QualityDropped → trigger. */
  public readonly monitoringRule: events.Rule;
  /** The periodic retraining check (default bus: schedules cannot live on a custom bus). */
  public readonly scheduleRule: events.Rule;
  /** `functions/updates/deploy.ts` (with an endpoint only). */
  public readonly deployFunction?: KilnNodeFunction;
  /** AliasMoved (challenger, champion) → deploy (with an endpoint only). */
  public readonly rolloutRule?: events.Rule;
  /** SageMaker endpoint (deployment) state changes → deploy (with an endpoint only). */
  public readonly endpointRule?: events.Rule;
  /** Execution-log group of the state machine. */
  public readonly logGroup: logs.LogGroup;

  constructor(scope: Construct, id: string, props: ModelUpdatesProps) {
    super(scope, id);
    const window = props.debounceWindow ?? Duration.minutes(10);
    assertIntegerInRange('debounceWindow (seconds)', window.toSeconds(), 1, 24 * 3600);
    const canaryPercentage = props.canaryPercentage ?? 10;
    assertIntegerInRange('canaryPercentage', canaryPercentage, 1, 50);
    const bake = props.canaryBakeTime ?? Duration.minutes(10);
    assertIntegerInRange('canaryBakeTime (seconds)', bake.toSeconds(), 0, 3600);
    const logRetention = props.logRetention ?? logs.RetentionDays.ONE_MONTH;
    const lake = props.lakeBucket;
    const common = { lake, bus: props.bus, logRetention, serviceName: 'kiln-updates' };

    this.planFunction = new KilnNodeFunction(this, 'PlanHandler', {
      ...common,
      handler: 'functions/updates/plan.handler',
      timeout: Duration.minutes(1),
    });
    this.recordFunction = new KilnNodeFunction(this, 'RecordHandler', {
      ...common,
      handler: 'functions/updates/record.handler',
      timeout: Duration.minutes(1),
    });
    // plan: the training config (registry/), the dataset head (curated/), versions already trained (registry/).
    lake.grantRead(this.planFunction, `${LakePrefix.registry}*`);
    lake.grantRead(this.planFunction, `${LakePrefix.curated}*`);
    lake.grantReadWrite(this.planFunction, `${UpdatesPrefix.triggers}*`);
    // record: the run record; a failed run releases its dataset claim so a later window may try again.
    lake.grantReadWrite(this.recordFunction, `${UpdatesPrefix.triggers}*`);
    lake.grantDelete(this.recordFunction, `${UpdatesPrefix.triggers}*`);
    props.bus.grantPutEventsTo(this.recordFunction);

    const recordRun = invokeLambda(this, RetrainingStates.record, {
      lambdaFunction: this.recordFunction.function,
      resultPath: '$.record',
      comment: 'Record which events caused the run and what it did; publish RetrainingRunCompleted',
    });
    const plan = invokeLambda(this, RetrainingStates.plan, {
      lambdaFunction: this.planFunction.function,
      resultPath: '$.plan',
      comment: 'Train on the latest curated version, or skip: nothing new, or another run claimed it',
    });
    plan.addCatch(recordRun, CATCH_ALL);
    const debounce = new sfn.Wait(this, RetrainingStates.debounce, {
      time: sfn.WaitTime.timestampPath('$.window.end'),
      comment: 'Every event until the window closes joins this run (same execution name)',
    });
    const etl = new tasks.StepFunctionsStartExecution(this, RetrainingStates.etl, {
      stateMachine: props.etlStateMachine,
      integrationPattern: sfn.IntegrationPattern.RUN_JOB,
      input: sfn.TaskInput.fromObject({ dataset: sfn.JsonPath.stringAt('$.dataset') }),
      resultSelector: { 'result.$': '$.Output.result' },
      resultPath: '$.etl',
      comment: 'Curate anything that landed but is not curated yet (a no-op on unchanged raw data)',
    });
    // A failed ETL (one bad landing) must not stop retraining on what is already curated.
    etl.addCatch(plan, { errors: [sfn.Errors.ALL], resultPath: '$.etlError' });
    const train = new tasks.StepFunctionsStartExecution(this, RetrainingStates.train, {
      stateMachine: props.trainingStateMachine,
      integrationPattern: sfn.IntegrationPattern.RUN_JOB,
      input: sfn.TaskInput.fromJsonPathAt('$.plan.request'),
      resultSelector: {
        'registration.$': '$.Output.registration',
        'evaluation.$': '$.Output.evaluation',
      },
      resultPath: '$.training',
      comment: 'Train, evaluate against the champion, gate, register',
    });
    train.addCatch(recordRun, CATCH_ALL);
    const failed = new sfn.Fail(this, RetrainingStates.failed, {
      error: 'RetrainingFailed',
      cause: 'the retraining run failed; see its run record under runs/triggers/',
    });
    const done = new sfn.Succeed(this, RetrainingStates.done);
    recordRun.next(
      new sfn.Choice(this, 'RunOutcome')
        .when(sfn.Condition.stringEquals('$.record.status', 'failed'), failed)
        .otherwise(done),
    );
    const definition = debounce
      .next(etl)
      .next(plan)
      .next(
        new sfn.Choice(this, RetrainingStates.shouldTrain)
          .when(sfn.Condition.booleanEquals('$.plan.train', true), train.next(recordRun))
          .otherwise(recordRun),
      );

    const logKey = props.logEncryptionKey ?? new LogEncryptionKey(this, 'LogKey');
    this.logGroup = logKey.logGroup(this, 'ExecutionLogs', logRetention);
    this.stateMachine = new sfn.StateMachine(this, 'StateMachine', {
      definitionBody: sfn.DefinitionBody.fromChainable(definition),
      stateMachineType: sfn.StateMachineType.STANDARD,
      // The window, then an ETL and a training run (the training pipeline has its own, longer bound).
      timeout: Duration.hours(30),
      tracingEnabled: true,
      logs: { destination: this.logGroup, level: sfn.LogLevel.ALL, includeExecutionData: true },
      comment: 'Kiln retraining: debounce window, ETL, plan, training, record',
    });

    this.triggerFunction = new KilnNodeFunction(this, 'TriggerHandler', {
      ...common,
      handler: 'functions/updates/trigger.handler',
      timeout: Duration.seconds(30),
      environment: {
        KILN_RETRAINING_STATE_MACHINE: this.stateMachine.stateMachineArn,
        KILN_RETRAINING_WINDOW_MS: String(window.toMilliseconds()),
      },
    });
    // trigger: training configs (registry/), windows and event records (runs/triggers/), StartExecution.
    lake.grantRead(this.triggerFunction, `${LakePrefix.registry}*`);
    lake.grantReadWrite(this.triggerFunction, `${UpdatesPrefix.triggers}*`);
    this.stateMachine.grantStartExecution(this.triggerFunction);

    const toTrigger = () =>
      new targets.LambdaFunction(this.triggerFunction.function, {
        retryAttempts: 3,
        maxEventAge: Duration.hours(2),
      });
    this.dataRule = new events.Rule(this, 'DataRule', {
      eventBus: props.bus,
      description: 'New curated data retrains the models trained on the dataset (debounced)',
      eventPattern: { source: ['kiln.etl'], detailType: [EventTypes.etlRunSucceeded] },
      targets: [toTrigger()],
    });
    this.monitoringRule = new events.Rule(this, 'MonitoringRule', {
      eventBus: props.bus,
      description: 'Drift and quality drops retrain the model (debounced)',
      eventPattern: {
        source: ['kiln.monitoring'],
        detailType: [EventTypes.driftDetected, EventTypes.qualityDropped],
      },
      targets: [toTrigger()],
    });
    this.scheduleRule = new events.Rule(this, 'ScheduleRule', {
      description:
        'Periodic retraining check: retrains models whose dataset has data they were not trained on',
      schedule: props.schedule ?? events.Schedule.rate(Duration.days(1)),
      enabled: props.scheduleEnabled ?? true,
      targets: [toTrigger()],
    });

    const prefixes: string[] = [LakePrefix.registry, LakePrefix.curated, UpdatesPrefix.triggers];
    const invoked = [this.planFunction.function, this.recordFunction.function];
    if (props.endpoint) {
      const { deployFunction, rolloutRule, endpointRule } = this.deployment(props, props.endpoint, {
        canaryPercentage,
        bake,
        common,
      });
      this.deployFunction = deployFunction;
      this.rolloutRule = rolloutRule;
      this.endpointRule = endpointRule;
      prefixes.push(LakePrefix.models, UpdatesPrefix.deployments);
    }

    acknowledgeGrantActions(this, BUCKET_GRANT_ACTIONS, 'bucket.grant* helpers');
    acknowledgePrefixGrants(this, lake, prefixes);
    acknowledgeInvokeVersions(this.stateMachine, invoked);
    Validations.of(this.stateMachine).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::*]',
      reason: 'Execution logging and X-Ray tracing do not support resource-level permissions.',
    });
    for (const machine of [props.etlStateMachine, props.trainingStateMachine]) {
      // The .sync integration's grant names the child's executions by splitting the machine's ARN.
      const arn = JSON.stringify(Stack.of(this).resolve(machine.stateMachineArn));
      Validations.of(this.stateMachine).acknowledge({
        id: `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:{"Fn::Select":[6,{"Fn::Split":[":",${arn}]}]}*]`,
        reason:
          'Waiting for a child execution (.sync) needs DescribeExecution/StopExecution on the executions of that one state machine; their names are generated per run.',
      });
    }
  }

  private deployment(
    props: ModelUpdatesProps,
    endpoint: InferenceEndpoint,
    settings: {
      canaryPercentage: number;
      bake: Duration;
      common: {
        lake: s3.IBucket;
        bus: events.IEventBus;
        logRetention: logs.RetentionDays;
        serviceName: string;
      };
    },
  ) {
    const lake = props.lakeBucket;
    const alarms = [
      ...new Set<cloudwatch.IAlarm>([
        endpoint.errorAlarm,
        endpoint.latencyAlarm,
        ...(props.rollbackAlarms ?? []),
      ]),
    ];
    const deployFunction = new KilnNodeFunction(this, 'DeployHandler', {
      ...settings.common,
      handler: 'functions/updates/deploy.handler',
      timeout: Duration.minutes(2),
      environment: {
        KILN_ENDPOINT_NAME: endpoint.endpointName,
        KILN_ENDPOINT_VARIANT: INFERENCE_VARIANT_NAME,
        KILN_INFERENCE_IMAGE: endpoint.image.imageUri,
        KILN_INFERENCE_ROLE_ARN: endpoint.role.roleArn,
        KILN_ROLLBACK_ALARMS: alarms.map((alarm) => alarm.alarmName).join(','),
        KILN_CANARY_PERCENT: String(settings.canaryPercentage),
        KILN_CANARY_BAKE_SECONDS: String(settings.bake.toSeconds()),
      },
    });
    // The registry (read the challenger, promote or archive it), the archive SageMaker serves (models/),
    // and the rollout records (runs/deployments/).
    lake.grantReadWrite(deployFunction, `${LakePrefix.registry}*`);
    lake.grantReadWrite(deployFunction, `${LakePrefix.models}*`);
    lake.grantReadWrite(deployFunction, `${UpdatesPrefix.deployments}*`);
    props.bus.grantPutEventsTo(deployFunction);
    const arn = (resource: string) =>
      `arn:${Aws.PARTITION}:sagemaker:${Aws.REGION}:${Aws.ACCOUNT_ID}:${resource}`;
    // Only names the deploy function generates: kiln-<model>-v<version>-<stamp>.
    deployFunction.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'CreateRolloutModels',
        actions: ['sagemaker:CreateModel'],
        resources: [arn('model/kiln-*')],
      }),
    );
    deployFunction.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'CreateRolloutEndpointConfigs',
        actions: ['sagemaker:CreateEndpointConfig'],
        resources: [arn('endpoint-config/kiln-*')],
      }),
    );
    deployFunction.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'ReadEndpointConfigs',
        actions: ['sagemaker:DescribeEndpointConfig'],
        resources: [endpoint.endpointConfig.ref, arn('endpoint-config/kiln-*')],
      }),
    );
    deployFunction.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'UpdateTheEndpoint',
        actions: ['sagemaker:DescribeEndpoint', 'sagemaker:UpdateEndpoint'],
        resources: [endpoint.endpointArn],
      }),
    );
    deployFunction.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'UpdateEndpointToRolloutConfigs',
        actions: ['sagemaker:UpdateEndpoint'],
        resources: [arn('endpoint-config/kiln-*'), endpoint.endpointConfig.ref],
      }),
    );
    deployFunction.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'PassTheModelRole',
        actions: ['iam:PassRole'],
        resources: [endpoint.role.roleArn],
        conditions: { StringEquals: { 'iam:PassedToService': 'sagemaker.amazonaws.com' } },
      }),
    );
    const toDeploy = () =>
      new targets.LambdaFunction(deployFunction.function, {
        retryAttempts: 3,
        maxEventAge: Duration.hours(2),
      });
    const rolloutRule = new events.Rule(this, 'RolloutRule', {
      eventBus: props.bus,
      description: 'A challenger (canary) or a new champion (blue/green) goes to the endpoint',
      eventPattern: {
        source: ['kiln.registry'],
        detailType: [EventTypes.aliasMoved],
        detail: { alias: ['challenger', 'champion'] },
      },
      targets: [toDeploy()],
    });
    const endpointRule = new events.Rule(this, 'EndpointRule', {
      description:
        'The endpoint finished (or rolled back) a deployment: promote or roll back in the registry',
      eventPattern: {
        source: ['aws.sagemaker'],
        detailType: ['SageMaker Endpoint Deployment State Change', 'SageMaker Endpoint State Change'],
        detail: { EndpointName: [endpoint.endpointName] },
      },
      targets: [toDeploy()],
    });
    const nag = Validations.of(deployFunction);
    nag.acknowledge(
      {
        id: `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:model/kiln-*]`,
        reason: 'Rollout models are named per challenger version at run time; limited to the kiln- prefix.',
      },
      {
        id: `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:endpoint-config/kiln-*]`,
        reason:
          'Rollout endpoint configs are named per challenger version at run time; limited to the kiln- prefix.',
      },
    );
    return { deployFunction, rolloutRule, endpointRule };
  }
}
