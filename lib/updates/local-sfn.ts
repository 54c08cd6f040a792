import { randomUUID } from 'node:crypto';
import { describeError, NotFoundError } from '../core/errors.ts';
import type { LocalPipelines } from '../local/pipeline-runner.ts';
import { type CfnTemplate, stateMachineDefinitions } from '../local/template.ts';
import type { RetrainingInput } from './retraining.ts';
import { ExecutionAlreadyExistsError, type StartExecutionRequest, type StepFunctionsPort } from './sfn.ts';

/**
 * Step Functions for the retraining state machine on one machine: the stand-in of child executions
 * (`states:startExecution.sync:2`) that the local platform registers, and the executor behind the local
 * trigger. Kept free of heavy imports: lib/local/platform.ts loads it on every CLI command.
 */

/** The ASL resource of "start a child execution and wait for it" (`.sync:2`: the output is JSON). */
export const STATES_START_EXECUTION_SYNC = 'arn:aws:states:::states:startExecution.sync:2';

/** The retraining state machine's first state (RetrainingStates.debounce); LocalPipelines finds it by it. */
export const RETRAINING_START_AT = 'DebounceWindow';
const PIPELINE_NAMES: Record<string, string> = {
  Plan: 'etl',
  Prepare: 'training',
  DebounceWindow: 'retraining',
};

/**
 * The local stand-in of `states:startExecution.sync:2`: runs the child state machine (by its logical id,
 * which is what its ARN resolves to locally) in process and returns what Step Functions returns.
 */
export function localStartExecutionSync(template: CfnTemplate, pipelines: () => Promise<LocalPipelines>) {
  const definitions = stateMachineDefinitions(template);
  return async (parameters: Record<string, unknown>): Promise<unknown> => {
    const arn = String(parameters.StateMachineArn ?? '');
    const logicalId = arn.split(':').at(-1) ?? arn;
    const definition = definitions.get(logicalId);
    if (!definition) throw new NotFoundError(`no state machine ${logicalId} in the synthesized template`);
    const input = (parameters.Input ?? {}) as Record<string, unknown>;
    const name = typeof parameters.Name === 'string' ? parameters.Name : randomUUID();
    const startDate = new Date().toISOString();
    const runner = await pipelines();
    const output = await runner.run(
      PIPELINE_NAMES[definition.StartAt] ?? logicalId,
      definition.StartAt,
      input,
    );
    return {
      ExecutionArn: `arn:aws:states:local:000000000000:execution:${logicalId}:${name}`,
      Input: JSON.stringify(input),
      Name: name,
      Output: output,
      StartDate: startDate,
      StopDate: new Date().toISOString(),
      Status: 'SUCCEEDED',
    };
  };
}

/** One local execution of the retraining state machine. */
export interface LocalExecution {
  name: string;
  input: RetrainingInput;
  status: 'waiting' | 'running' | 'succeeded' | 'failed';
  /** The window was closed early (flush) rather than waited out. */
  closedEarly: boolean;
  output?: Record<string, unknown>;
  error?: string;
  startDate: Date;
}

/**
 * Step Functions for the retraining state machine, on this machine: an execution name is unique (a repeat
 * with the same input while it runs returns it, anything else is ExecutionAlreadyExists), and an execution
 * starts when its debounce window ends — or at once on {@link flush}, which closes the window early.
 */
export class LocalStepFunctions implements StepFunctionsPort {
  private readonly executions = new Map<
    string,
    LocalExecution & { raw: string; timer?: NodeJS.Timeout; done?: Promise<void> }
  >();

  constructor(
    private readonly options: {
      run: (input: RetrainingInput) => Promise<Record<string, unknown>>;
      closeWindow: (input: RetrainingInput, at: Date) => Promise<void>;
      now?: () => Date;
      onSettled?: (execution: LocalExecution) => void;
    },
  ) {}

  async startExecution(request: StartExecutionRequest): Promise<{ executionArn: string; startDate: Date }> {
    const existing = this.executions.get(request.name);
    const arn = `arn:aws:states:local:000000000000:execution:retraining:${request.name}`;
    if (existing) {
      if (
        (existing.status === 'waiting' || existing.status === 'running') &&
        existing.raw === request.input
      ) {
        return { executionArn: arn, startDate: existing.startDate };
      }
      throw new ExecutionAlreadyExistsError(request.name);
    }
    const input = JSON.parse(request.input) as RetrainingInput;
    const now = this.now();
    const execution: LocalExecution & { raw: string; timer?: NodeJS.Timeout; done?: Promise<void> } = {
      name: request.name,
      input,
      raw: request.input,
      status: 'waiting',
      closedEarly: false,
      startDate: now,
    };
    this.executions.set(request.name, execution);
    const delay = Math.max(0, Date.parse(input.window.end) - now.getTime());
    execution.timer = setTimeout(() => void this.begin(execution), delay);
    execution.timer.unref();
    return { executionArn: arn, startDate: now };
  }

  /** Every execution so far, oldest first. */
  list(): LocalExecution[] {
    return [...this.executions.values()].map(({ raw: _raw, timer: _timer, done: _done, ...execution }) => ({
      ...execution,
    }));
  }

  /** Closes every open window now, runs the waiting executions and waits for all of them. */
  async flush(): Promise<void> {
    for (const execution of this.executions.values()) {
      if (execution.status === 'waiting') void this.begin(execution);
    }
    await this.idle();
  }

  /** Waits for the executions that are running (waiting ones keep waiting for their window). */
  async idle(): Promise<void> {
    for (;;) {
      const running = [...this.executions.values()]
        .filter((execution) => execution.status === 'running' && execution.done)
        .map((execution) => execution.done as Promise<void>);
      if (running.length === 0) return;
      await Promise.all(running);
    }
  }

  /** Drops waiting executions (their windows stay recorded; nothing runs). */
  cancelWaiting(): void {
    for (const execution of this.executions.values()) {
      if (execution.status === 'waiting' && execution.timer) clearTimeout(execution.timer);
    }
  }

  private now(): Date {
    return this.options.now?.() ?? new Date();
  }

  private begin(execution: LocalExecution & { timer?: NodeJS.Timeout; done?: Promise<void> }): Promise<void> {
    if (execution.status !== 'waiting') return execution.done ?? Promise.resolve();
    if (execution.timer) clearTimeout(execution.timer);
    execution.status = 'running';
    const now = this.now();
    let input = execution.input;
    if (Date.parse(input.window.end) > now.getTime()) {
      // Closing early: later events open the next window, and the Wait state has nothing left to wait for.
      execution.closedEarly = true;
      input = { ...input, window: { ...input.window, end: now.toISOString() } };
    }
    execution.done = (async () => {
      try {
        if (execution.closedEarly) await this.options.closeWindow(execution.input, now);
        execution.output = await this.options.run(input);
        execution.status = 'succeeded';
      } catch (error) {
        execution.status = 'failed';
        execution.error = describeError(error);
      }
      this.options.onSettled?.(execution);
    })();
    return execution.done;
  }
}
