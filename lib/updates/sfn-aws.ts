import { SFNClient as Client, type SFNClient, StartExecutionCommand } from '@aws-sdk/client-sfn';
import { ExecutionAlreadyExistsError, type StartExecutionRequest, type StepFunctionsPort } from './sfn.ts';

/** The port over `@aws-sdk/client-sfn`. */
export class AwsStepFunctions implements StepFunctionsPort {
  constructor(private readonly client: Pick<SFNClient, 'send'> = new Client({})) {}

  async startExecution(request: StartExecutionRequest): Promise<{ executionArn: string; startDate: Date }> {
    try {
      const response = await this.client.send(
        new StartExecutionCommand({
          stateMachineArn: request.stateMachineArn,
          name: request.name,
          input: request.input,
        }),
      );
      return {
        executionArn: response.executionArn ?? '',
        startDate: response.startDate ?? new Date(),
      };
    } catch (error) {
      if ((error as { name?: unknown }).name === 'ExecutionAlreadyExists') {
        throw new ExecutionAlreadyExistsError(request.name, { cause: error });
      }
      throw error;
    }
  }
}
