// The training container's entry point: the SageMaker training contract, run by `docker run … train`
// on AWS and as a child process by the local runtime (KILN_OPT_ML points at the job's folder there).
import { describeError } from '../../lib/core/errors.ts';
import { runTrainingContract } from '../../lib/training/contract.ts';

const root = process.env.KILN_OPT_ML ?? '/opt/ml';
try {
  const summary = await runTrainingContract(root);
  console.log(JSON.stringify({ level: 'info', message: 'training complete', metrics: summary.metrics }));
} catch (error) {
  console.error(JSON.stringify({ level: 'error', message: describeError(error) }));
  process.exitCode = 1;
}
