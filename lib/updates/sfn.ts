import { ConflictError } from '../core/errors.ts';

/**
 * The one Step Functions call the retraining trigger makes, as a port: the AWS SDK on Lambda, the local
 * runtime's executor on a laptop (lib/updates/local.ts). Both keep Step Functions' rule that an execution
 * name is unique per state machine: a second start with the same name returns the running execution when
 * the input is the same and fails with ExecutionAlreadyExists otherwise.
 */
export interface StepFunctionsPort {
  startExecution(request: StartExecutionRequest): Promise<{ executionArn: string; startDate: Date }>;
}

/** StartExecution's request. */
export interface StartExecutionRequest {
  stateMachineArn: string;
  /** 1–80 characters of `[A-Za-z0-9_-]`; unique per state machine for 90 days. */
  name: string;
  /** The execution input, as JSON text. */
  input: string;
}

/** Step Functions refused a name it has seen before (a closed execution, or a running one with other input). */
export class ExecutionAlreadyExistsError extends ConflictError {
  constructor(name: string, options?: { cause?: unknown }) {
    super(`an execution named ${name} already exists`, options);
  }
}

/** Step Functions' execution-name rule. */
export const EXECUTION_NAME = /^[A-Za-z0-9_-]{1,80}$/;
