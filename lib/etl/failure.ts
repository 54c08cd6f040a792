import { z } from 'zod';
import { lake } from '../store/layout.ts';
import { type ObjectStore, toJsonBody } from '../store/object-store.ts';
import { makeRunId } from './plan.ts';

/** Input of the `RecordFailure` state: the pipeline, the failed state's input and Step Functions' error. */
export const PipelineFailureInputSchema = z.object({
  pipeline: z.enum(['etl', 'training']),
  input: z.unknown(),
  error: z.object({ Error: z.string(), Cause: z.string().optional() }),
});
export type PipelineFailureInput = z.infer<typeof PipelineFailureInputSchema>;

/** The failure record written to `runs/<pipeline>/<runId>-failed.json`. */
export interface PipelineFailure {
  kind: 'kiln.pipeline-failure';
  pipeline: 'etl' | 'training';
  runId: string;
  failedAt: string;
  error: { type: string; message: string };
  input: unknown;
  key: string;
}

/**
 * Records a pipeline failure in the run reports. The run id comes from the failed input when it has one
 * (so the failure sits next to the run's report), else a fresh timestamped id. Lambda's `Cause` JSON is
 * reduced to type and message: stack traces stay in the logs.
 */
export async function recordPipelineFailure(
  store: ObjectStore,
  input: PipelineFailureInput,
): Promise<PipelineFailure> {
  // The state machine passes its whole state: the run id sits at `plan.runId` once Plan has run (ETL), at
  // `job.trainingJobName` once Prepare has run (training).
  const state = input.input as
    | { runId?: unknown; plan?: { runId?: unknown }; job?: { trainingJobName?: unknown } }
    | null
    | undefined;
  const candidate = state?.runId ?? state?.plan?.runId ?? state?.job?.trainingJobName;
  const runId =
    typeof candidate === 'string' && /^[A-Za-z0-9_.-]{1,100}$/.test(candidate)
      ? candidate
      : makeRunId(new Date());
  const key = lake.runReport(input.pipeline, `${runId}-failed`);
  const failure: PipelineFailure = {
    kind: 'kiln.pipeline-failure',
    pipeline: input.pipeline,
    runId,
    failedAt: new Date().toISOString(),
    error: describeCause(input.error),
    input: input.input ?? null,
    key,
  };
  await store.put(key, toJsonBody(failure), { contentType: 'application/json' });
  return failure;
}

function describeCause(error: { Error: string; Cause?: string }): { type: string; message: string } {
  if (!error.Cause) return { type: error.Error, message: error.Error };
  try {
    const parsed = JSON.parse(error.Cause) as {
      errorType?: unknown;
      errorMessage?: unknown;
      FailureReason?: unknown;
    };
    if (typeof parsed.errorMessage === 'string') {
      return {
        type: typeof parsed.errorType === 'string' ? parsed.errorType : error.Error,
        message: parsed.errorMessage,
      };
    }
    // A failed SageMaker .sync job: the cause is DescribeTrainingJob's output, the reason in FailureReason.
    if (typeof parsed.FailureReason === 'string') return { type: error.Error, message: parsed.FailureReason };
  } catch {
    // Cause is plain text (not Lambda's JSON envelope): keep it as the message.
  }
  return { type: error.Error, message: error.Cause };
}
