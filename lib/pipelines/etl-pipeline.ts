import { Duration, Fn, Validations } from 'aws-cdk-lib';
import type * as events from 'aws-cdk-lib/aws-events';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { LakePrefix } from '../constructs/data-lake.ts';
import { KilnContainerFunction, type KilnHandler } from '../constructs/kiln-function.ts';
import { LogEncryptionKey } from '../constructs/log-key.ts';
import {
  acknowledgeGrantActions,
  acknowledgeInvokeVersions,
  acknowledgePrefixGrants,
  BUCKET_GRANT_ACTIONS,
  nagReference,
} from '../constructs/nag.ts';
import { assertIntegerInRange } from '../constructs/validate.ts';
import { CATCH_ALL, failureBranch, invokeLambda } from './lambda-task.ts';

/** State names of the ETL state machine; the local runtime and tests key on them. */
export const EtlStates = {
  plan: 'Plan',
  processShards: 'ProcessShards',
  processShard: 'ProcessShard',
  finalize: 'Finalize',
  succeeded: 'EtlSucceeded',
  recordFailure: 'RecordFailure',
  failed: 'EtlFailed',
} as const;

/** Properties of {@link EtlPipeline}. */
export interface EtlPipelineProps {
  /** The lake bucket the handlers read and write (prefix-scoped grants). */
  readonly lakeBucket: s3.IBucket;
  /** The platform bus (`EtlRunSucceeded` and friends are published here). */
  readonly bus: events.IEventBus;
  /** Handler recording pipeline failures (shared by all pipelines). */
  readonly failureFunction: lambda.IFunction;
  /**
   * Child executions of the Distributed Map running at once (1–10000).
   * @default 40
   */
  readonly maxConcurrency?: number;
  /** Upper bound of one ETL execution. @default Duration.hours(6) */
  readonly timeout?: Duration;
  /** Key for the execution-log group. @default - a new {@link LogEncryptionKey} */
  readonly logEncryptionKey?: LogEncryptionKey;
  /** Retention of execution and handler logs. @default logs.RetentionDays.ONE_MONTH */
  readonly logRetention?: logs.RetentionDays;
}

/**
 * Sharded ETL: `Plan` lists the shards of a raw ingest, `ProcessShards` (Distributed Map) validates and
 * transforms each shard to staging/quarantine, `Finalize` commits the curated version.
 *
 * The map reads its items from state (`$.plan.shards`), not from S3 (ItemReader), so the same
 * definition runs in the local Step Functions runtime.
 */
export class EtlPipeline extends Construct {
  /** The ETL state machine. */
  public readonly stateMachine: sfn.StateMachine;
  /** `functions/etl/plan.ts` (container image: lib/etl/plan.ts loads DuckDB). */
  public readonly planFunction: KilnHandler;
  /** `functions/etl/shard.ts` (container image: DuckDB). */
  public readonly shardFunction: KilnHandler;
  /** `functions/etl/finalize.ts` (container image: DuckDB). */
  public readonly finalizeFunction: KilnHandler;
  /** Execution-log group of the state machine. */
  public readonly logGroup: logs.LogGroup;

  constructor(scope: Construct, id: string, props: EtlPipelineProps) {
    super(scope, id);
    const maxConcurrency = props.maxConcurrency ?? 40;
    assertIntegerInRange('maxConcurrency', maxConcurrency, 1, 10000);
    const logRetention = props.logRetention ?? logs.RetentionDays.ONE_MONTH;
    const logKey = props.logEncryptionKey ?? new LogEncryptionKey(this, 'LogKey');
    const common = { lake: props.lakeBucket, bus: props.bus, logRetention, serviceName: 'kiln-etl' };

    // Each task's timeout is its function's, so a local run allows big shards as long as Lambda would.
    const planTimeout = Duration.minutes(5);
    const workTimeout = Duration.minutes(15);
    this.planFunction = new KilnContainerFunction(this, 'PlanHandler', {
      ...common,
      handler: 'functions/etl/plan.handler',
      timeout: planTimeout,
    });
    this.shardFunction = new KilnContainerFunction(this, 'ShardHandler', {
      ...common,
      handler: 'functions/etl/shard.handler',
      timeout: workTimeout,
    });
    this.finalizeFunction = new KilnContainerFunction(this, 'FinalizeHandler', {
      ...common,
      handler: 'functions/etl/finalize.handler',
      timeout: workTimeout,
    });

    const lake = props.lakeBucket;
    // plan: list the ingest, index each raw object once, infer the contract on first data.
    lake.grantRead(this.planFunction, `${LakePrefix.raw}*`);
    lake.grantReadWrite(this.planFunction, `${LakePrefix.index}*`);
    lake.grantReadWrite(this.planFunction, `${LakePrefix.schemas}*`);
    // shard: read one raw object and the contract, write staged Parquet and quarantined rows — never curated/.
    lake.grantRead(this.shardFunction, `${LakePrefix.raw}*`);
    lake.grantRead(this.shardFunction, `${LakePrefix.index}*`);
    lake.grantReadWrite(this.shardFunction, `${LakePrefix.schemas}*`);
    lake.grantPut(this.shardFunction, `${LakePrefix.curatedStaging}*`);
    lake.grantPut(this.shardFunction, `${LakePrefix.quarantine}*`);
    // finalize: merge staging into a curated version (manifest, head pointer), report the run, clean up.
    lake.grantRead(this.finalizeFunction, `${LakePrefix.curatedStaging}*`);
    lake.grantDelete(this.finalizeFunction, `${LakePrefix.curatedStaging}*`);
    lake.grantRead(this.finalizeFunction, `${LakePrefix.quarantine}*`);
    lake.grantRead(this.finalizeFunction, `${LakePrefix.schemas}*`);
    lake.grantReadWrite(this.finalizeFunction, `${LakePrefix.curated}*`);
    lake.grantReadWrite(this.finalizeFunction, `${LakePrefix.runs}*`);
    // Only finalize publishes (EtlRunSucceeded, for a new curated version).
    props.bus.grantPutEventsTo(this.finalizeFunction);

    const recordFailure = failureBranch(this, {
      pipeline: 'etl',
      failureFunction: props.failureFunction,
      recordStateName: EtlStates.recordFailure,
      failStateName: EtlStates.failed,
    });

    const plan = invokeLambda(this, EtlStates.plan, {
      lambdaFunction: this.planFunction.function,
      resultPath: '$.plan',
      comment: 'Derive dataset and run id from the raw key and list the shards to process',
      timeout: planTimeout,
    });

    const processShard = invokeLambda(this, EtlStates.processShard, {
      lambdaFunction: this.shardFunction.function,
      comment: 'Validate, quarantine and transform one shard into curated-staging/',
      timeout: workTimeout,
    });
    const processShards = new sfn.DistributedMap(this, EtlStates.processShards, {
      itemsPath: '$.plan.shards',
      itemSelector: {
        dataset: sfn.JsonPath.stringAt('$.plan.dataset'),
        runId: sfn.JsonPath.stringAt('$.plan.runId'),
        shard: sfn.JsonPath.objectAt('$$.Map.Item.Value'),
        options: sfn.JsonPath.objectAt('$.plan.options'),
      },
      maxConcurrency,
      // Every raw row must end up curated or quarantined: one failed shard fails the run.
      // (0 is also the service default, so CDK leaves the field out of the definition.)
      toleratedFailurePercentage: 0,
      // Shards may run up to the Lambda limit of 15 minutes; Express children stop at 5.
      mapExecutionType: sfn.StateMachineType.STANDARD,
      resultPath: '$.shardResults',
    });
    processShards.itemProcessor(processShard);

    const finalize = invokeLambda(this, EtlStates.finalize, {
      lambdaFunction: this.finalizeFunction.function,
      payload: sfn.TaskInput.fromObject({
        dataset: sfn.JsonPath.stringAt('$.plan.dataset'),
        runId: sfn.JsonPath.stringAt('$.plan.runId'),
        shardResults: sfn.JsonPath.objectAt('$.shardResults'),
        // Refused raw objects go into the run report; the options (split, threshold) are the run's.
        rejected: sfn.JsonPath.objectAt('$.plan.rejected'),
        options: sfn.JsonPath.objectAt('$.plan.options'),
      }),
      resultPath: '$.result',
      comment: 'Commit the staged shards as a curated dataset version and publish EtlRunSucceeded',
      timeout: workTimeout,
    });

    plan.addCatch(recordFailure, CATCH_ALL);
    processShards.addCatch(recordFailure, CATCH_ALL);
    finalize.addCatch(recordFailure, CATCH_ALL);

    const definition = plan
      .next(processShards)
      .next(finalize)
      .next(new sfn.Succeed(this, EtlStates.succeeded));

    this.logGroup = logKey.logGroup(this, 'ExecutionLogs', logRetention);
    this.stateMachine = new sfn.StateMachine(this, 'StateMachine', {
      definitionBody: sfn.DefinitionBody.fromChainable(definition),
      stateMachineType: sfn.StateMachineType.STANDARD,
      timeout: props.timeout ?? Duration.hours(6),
      tracingEnabled: true,
      logs: { destination: this.logGroup, level: sfn.LogLevel.ALL, includeExecutionData: true },
      comment: 'Kiln ETL: plan shards, process them in a Distributed Map, finalize a curated version',
    });

    acknowledgeGrantActions(this, BUCKET_GRANT_ACTIONS, 'bucket.grant* helpers');
    acknowledgePrefixGrants(this, lake, [
      LakePrefix.raw,
      LakePrefix.index,
      LakePrefix.schemas,
      LakePrefix.curated,
      LakePrefix.curatedStaging,
      LakePrefix.quarantine,
      LakePrefix.runs,
    ]);
    acknowledgeInvokeVersions(this.stateMachine, [
      this.planFunction.function,
      this.shardFunction.function,
      this.finalizeFunction.function,
      props.failureFunction,
    ]);
    // The Distributed Map's child executions: describe/stop on executions of this state machine only
    // (CDK derives the name by splitting the ARN, and the finding id carries that expression).
    const name = Fn.select(6, Fn.split(':', this.stateMachine.stateMachineArn));
    const executions = `arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:${nagReference(this, name)}`;
    for (const pattern of [`${executions}:*`, `${executions}/*:*`]) {
      Validations.of(this.stateMachine).acknowledge({
        id: `AwsSolutions-IAM5[Resource::${pattern}]`,
        reason:
          'Distributed Map child executions get generated names; access is limited to executions of this state machine.',
      });
    }
    Validations.of(this.stateMachine).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::*]',
      reason:
        'Execution logging (logs:*LogDelivery, DescribeLogGroups) and X-Ray tracing do not support resource-level permissions.',
    });
  }
}
