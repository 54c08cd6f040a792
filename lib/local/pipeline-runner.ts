import './polyfills.ts';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { StateMachine, type StateMachineDefinition } from 'aws-local-stepfunctions';
import { describeError } from '../core/errors.ts';
import {
  type AslDefinition,
  type CfnTemplate,
  handlerOfFunction,
  LOCAL_ACCOUNT,
  LOCAL_REGION,
  stateMachineDefinitions,
  taskStates,
} from './template.ts';

type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };
type LocalTaskHandler = (parameters: Record<string, unknown>) => Promise<unknown>;
type LambdaHandler = (event: unknown, context: Record<string, unknown>) => Promise<unknown>;

/** Local stand-ins for service integrations other than Lambda, keyed by the ASL `Resource` they replace. */
export type ServiceIntegrations = Record<string, LocalTaskHandler>;

/** One state entered or exited, for progress display. */
export interface StateProgress {
  pipeline: string;
  state: string;
  phase: 'entered' | 'exited' | 'failed' | 'retried' | 'caught';
}

export interface LocalPipelineOptions {
  template: CfnTemplate;
  /** Repository root: KILN_HANDLER paths are relative to it. */
  rootDir: string;
  services?: ServiceIntegrations;
  onProgress?: (progress: StateProgress) => void;
}

/** A pipeline run's failure, carrying the ASL error name and cause, as Step Functions reports them. */
export class PipelineFailedError extends Error {
  constructor(
    readonly pipeline: string,
    readonly error: string,
    override readonly cause: string,
  ) {
    super(`${pipeline} pipeline failed: ${error}: ${summariseCause(cause)}`);
    this.name = 'PipelineFailedError';
  }
}

const LAMBDA_INVOKE = 'arn:aws:states:::lambda:invoke';
const LAMBDA_FUNCTION_ARN = /^arn:aws:lambda:[^:]+:\d+:function:[^:]+$/;

/**
 * Runs the state machines exactly as CDK synthesized them, with aws-local-stepfunctions: every Lambda task
 * calls the handler module named by the function's KILN_HANDLER variable, and every other service task
 * calls its local stand-in. Nothing here restates the pipeline's shape: it all comes from the template.
 */
export class LocalPipelines {
  private readonly definitions: Map<string, AslDefinition>;
  private readonly handlerCache = new Map<string, Promise<LambdaHandler>>();
  private readonly machines = new Map<string, StateMachine>();

  constructor(private readonly options: LocalPipelineOptions) {
    this.definitions = stateMachineDefinitions(options.template);
  }

  /** The definition whose first state is `startAt` (ETL starts at Plan, training at Prepare). */
  definitionStartingAt(startAt: string): { logicalId: string; definition: AslDefinition } {
    for (const [logicalId, definition] of this.definitions) {
      if (definition.StartAt === startAt) return { logicalId, definition };
    }
    throw new Error(`the synthesized template has no state machine starting at ${startAt}`);
  }

  /**
   * Loads the state machine whose first state is `startAt`: its definition is validated here, once per
   * process (as Step Functions validates a definition when the machine is created, not at each execution;
   * the validator compiles its JSON schemas on every call, 0.1-0.3 s), and every later run reuses it.
   */
  prepare(startAt: string): { logicalId: string; definition: AslDefinition; machine: StateMachine } {
    const { logicalId, definition } = this.definitionStartingAt(startAt);
    let machine = this.machines.get(logicalId);
    if (!machine) {
      machine = new StateMachine(definition as unknown as StateMachineDefinition, {
        validationOptions: { checkArn: false },
        awsConfig: { region: LOCAL_REGION },
      });
      this.machines.set(logicalId, machine);
    }
    return { logicalId, definition, machine };
  }

  /** Executes a synthesized state machine to completion and returns its output. */
  async run(
    pipeline: string,
    startAt: string,
    input: Record<string, unknown>,
  ): Promise<Record<string, unknown>> {
    const { logicalId, definition, machine } = this.prepare(startAt);
    const handlers: Record<string, (input: JsonValue) => Promise<JsonValue>> = {};
    for (const [stateName, state] of taskStates(definition)) {
      handlers[stateName] = async (parameters) =>
        (await this.invokeTask(
          stateName,
          state.Resource ?? '',
          parameters as Record<string, unknown>,
        )) as JsonValue;
    }
    const execution = machine.run(input as JsonValue, {
      overrides: {
        taskResourceLocalHandlers: handlers,
        retryIntervalOverrides: retryWithoutWaiting(definition),
      },
      context: {
        Execution: {
          Id: `arn:aws:states:${LOCAL_REGION}:${LOCAL_ACCOUNT}:execution:${logicalId}:${randomUUID()}`,
          Name: randomUUID(),
          StartTime: new Date().toISOString(),
        },
      },
    });
    const progress = this.followProgress(pipeline, execution.eventLogs);
    try {
      const output = await execution.result;
      return (output ?? {}) as Record<string, unknown>;
    } catch (error) {
      const { name, cause } = executionFailure(error);
      throw new PipelineFailedError(pipeline, name, cause);
    } finally {
      await progress;
    }
  }

  private async followProgress(
    pipeline: string,
    logs: AsyncGenerator<{ type: string; state?: { name: string } }>,
  ) {
    const onProgress = this.options.onProgress;
    for await (const event of logs) {
      if (!onProgress || !event.state) continue;
      const phase = (
        {
          StateEntered: 'entered',
          StateExited: 'exited',
          StateFailed: 'failed',
          StateRetried: 'retried',
          StateCaught: 'caught',
        } as const
      )[event.type];
      if (phase) onProgress({ pipeline, state: event.state.name, phase });
    }
  }

  private async invokeTask(stateName: string, resource: string, parameters: Record<string, unknown>) {
    if (resource === LAMBDA_INVOKE) return this.invokeLambda(parameters);
    // A function ARN as Resource is the direct Lambda integration: the input is the event, the result the output.
    if (LAMBDA_FUNCTION_ARN.test(resource)) {
      const response = await this.invokeLambda({ FunctionName: resource, Payload: parameters });
      return response.Payload;
    }
    const service = this.options.services?.[resource];
    if (!service) throw new Error(`state ${stateName}: no local stand-in for ${resource}`);
    return service(parameters);
  }

  /** Mirrors the `lambda:invoke` integration: returns `{Payload, StatusCode}`; function errors keep their type. */
  private async invokeLambda(parameters: Record<string, unknown>) {
    const functionName = String(parameters.FunctionName ?? '');
    const logicalId = functionName.split(':').at(-1) ?? functionName;
    const handler = await this.loadHandler(handlerOfFunction(this.options.template, logicalId));
    const context = {
      functionName: logicalId,
      functionVersion: '$LATEST',
      invokedFunctionArn: functionName,
      memoryLimitInMB: '3008',
      awsRequestId: randomUUID(),
      logGroupName: `/aws/lambda/${logicalId}`,
      logStreamName: 'local',
      callbackWaitsForEmptyEventLoop: false,
      getRemainingTimeInMillis: () => 900_000,
    };
    try {
      const payload = await handler(parameters.Payload, context);
      return { Payload: payload ?? null, StatusCode: 200, ExecutedVersion: '$LATEST' };
    } catch (error) {
      // Lambda reports a function error as errorType + a JSON cause; no stack trace leaves the function.
      const errorType = error instanceof Error ? error.name : 'Error';
      const failure = new Error(JSON.stringify({ errorType, errorMessage: describeError(error) }));
      failure.name = errorType;
      throw failure;
    }
  }

  private loadHandler(spec: string): Promise<LambdaHandler> {
    let loading = this.handlerCache.get(spec);
    if (!loading) {
      const dot = spec.lastIndexOf('.');
      const modulePath = join(this.options.rootDir, `${spec.slice(0, dot)}.ts`);
      const exportName = spec.slice(dot + 1);
      loading = import(pathToFileURL(modulePath).href).then((module: Record<string, unknown>) => {
        const handler = module[exportName];
        if (typeof handler !== 'function') throw new Error(`${modulePath} does not export ${exportName}`);
        return handler as LambdaHandler;
      });
      this.handlerCache.set(spec, loading);
    }
    return loading;
  }
}

/** Retries stay (same attempts, same matching), but locally they do not sleep for seconds. */
function retryWithoutWaiting(definition: AslDefinition): Record<string, number> {
  const overrides: Record<string, number> = {};
  const visit = (machine: AslDefinition) => {
    for (const [name, state] of Object.entries(machine.States)) {
      if (Array.isArray(state.Retry)) overrides[name] = 10;
      if (state.ItemProcessor) visit(state.ItemProcessor);
      if (state.Iterator) visit(state.Iterator);
      for (const branch of state.Branches ?? []) visit(branch);
    }
  };
  visit(definition);
  return overrides;
}

function executionFailure(error: unknown): { name: string; cause: string } {
  const inner = (error as { cause?: unknown }).cause;
  const source = inner instanceof Error ? inner : error;
  if (source instanceof Error) return { name: source.name, cause: source.message };
  return { name: 'States.Runtime', cause: String(error) };
}

/** A Lambda cause is JSON with errorMessage; a Fail state's cause is plain text. */
function summariseCause(cause: string): string {
  try {
    const parsed = JSON.parse(cause) as { errorMessage?: unknown; FailureReason?: unknown };
    if (typeof parsed.errorMessage === 'string') return parsed.errorMessage;
    // A failed SageMaker .sync job (DescribeTrainingJob's output).
    if (typeof parsed.FailureReason === 'string') return parsed.FailureReason;
  } catch {
    // not JSON: use as is
  }
  return cause;
}
