import { Duration } from 'aws-cdk-lib';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import type { Construct } from 'constructs';

/** Transient Lambda service errors every Kiln Lambda task retries. */
export const LAMBDA_TRANSIENT_ERRORS: readonly string[] = [
  'Lambda.ServiceException',
  'Lambda.AWSLambdaException',
  'Lambda.SdkClientException',
  'Lambda.TooManyRequestsException',
];

/** Options of {@link invokeLambda}. */
export interface InvokeLambdaOptions {
  /** The function to invoke. */
  readonly lambdaFunction: lambda.IFunction;
  /** Payload sent to the function. @default - the state input */
  readonly payload?: sfn.TaskInput;
  /** Where the function's result goes in the state. @default '$' (the result replaces the state) */
  readonly resultPath?: string;
  /** State comment. @default - none */
  readonly comment?: string;
  /**
   * The state's TimeoutSeconds: set it to the function's own timeout. Step Functions has no task timeout by
   * default, but the local runtime (aws-local-stepfunctions) then stops a task after 60 seconds.
   * @default - none
   */
  readonly timeout?: Duration;
}

/**
 * A Lambda Task whose result is the handler's return value itself, with the platform retry policy.
 *
 * Why `payloadResponseOnly`: the `lambda:invoke` integration wraps the return value in
 * `{Payload, StatusCode, …}`, and ASL's ResultSelector must build an object, so no JSONPath combination
 * can place the bare return value at `$.plan` while keeping the rest of the state. Invoking the
 * function ARN directly does exactly that, and the pipelines' paths (`$.plan.shards`,
 * `$.evaluation.gate.passed`, …) stay as documented. Locally, such a Task's `Resource` is the
 * function's ARN (a `Fn::GetAtt [<logicalId>, Arn]` in the template), its effective input
 * (`Parameters` applied) is the event, and the handler's result is the task result.
 */
export function invokeLambda(scope: Construct, id: string, options: InvokeLambdaOptions): tasks.LambdaInvoke {
  const task = new tasks.LambdaInvoke(scope, id, {
    lambdaFunction: options.lambdaFunction,
    payloadResponseOnly: true,
    // The default retry covers a different error list with 6 attempts; the platform policy replaces it.
    retryOnServiceExceptions: false,
    payload: options.payload,
    resultPath: options.resultPath,
    comment: options.comment,
    ...(options.timeout ? { taskTimeout: sfn.Timeout.duration(options.timeout) } : {}),
  });
  task.addRetry({
    errors: [...LAMBDA_TRANSIENT_ERRORS],
    interval: Duration.seconds(2),
    maxAttempts: 3,
    backoffRate: 2,
    jitterStrategy: sfn.JitterType.FULL,
  });
  return task;
}

/** Options of {@link failureBranch}. */
export interface FailureBranchOptions {
  /** Pipeline name passed to the failure handler (`etl`, `training`). */
  readonly pipeline: string;
  /** The failure handler. */
  readonly failureFunction: lambda.IFunction;
  /** Name of the Task state recording the failure. */
  readonly recordStateName: string;
  /** Name of the terminal Fail state. */
  readonly failStateName: string;
}

/**
 * The shared failure path: record the failure (handler gets `{pipeline, input, error}`), then fail the
 * execution with the original error name and cause, which catchers placed at `$.error`.
 */
export function failureBranch(scope: Construct, options: FailureBranchOptions): tasks.LambdaInvoke {
  const record = invokeLambda(scope, options.recordStateName, {
    lambdaFunction: options.failureFunction,
    payload: sfn.TaskInput.fromObject({
      pipeline: options.pipeline,
      input: sfn.JsonPath.entirePayload,
      error: sfn.JsonPath.objectAt('$.error'),
    }),
    resultPath: sfn.JsonPath.DISCARD,
  });
  record.next(
    new sfn.Fail(scope, options.failStateName, {
      errorPath: '$.error.Error',
      causePath: '$.error.Cause',
    }),
  );
  return record;
}

/** Catch configuration every pipeline step uses: any error, recorded at `$.error`. */
export const CATCH_ALL: sfn.CatchProps = { errors: [sfn.Errors.ALL], resultPath: '$.error' };
