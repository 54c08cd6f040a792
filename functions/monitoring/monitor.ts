import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { Metrics } from '@aws-lambda-powertools/metrics';
import { logMetrics } from '@aws-lambda-powertools/metrics/middleware';
import middy from '@middy/core';
import { publishMonitoringMetrics } from '../../lib/monitoring/cloudwatch.ts';
import { DEFAULT_WINDOW_HOURS, runMonitorJob, summarizeMonitorJob } from '../../lib/monitoring/job.ts';
import { MONITORING_NAMESPACE, MONITORING_SERVICE } from '../../lib/monitoring/metric-names.ts';
import { lakeFromEnv } from '../../lib/store/from-env.ts';
import { eventsFromEnv, logger } from '../lib/runtime.ts';

const metrics = new Metrics({ namespace: MONITORING_NAMESPACE, serviceName: MONITORING_SERVICE });
const windowHours = Number(process.env.KILN_MONITOR_WINDOW_HOURS ?? DEFAULT_WINDOW_HOURS);
if (!(windowHours > 0 && windowHours <= 24 * 400)) {
  throw new Error(
    `KILN_MONITOR_WINDOW_HOURS must be a number of hours in (0, 9600], got ${process.env.KILN_MONITOR_WINDOW_HOURS}`,
  );
}

/**
 * The scheduled monitor: `{ model, version?, since?, until? }` checks one model; the EventBridge schedule
 * event (or `{}`) checks every model's champion over the last KILN_MONITOR_WINDOW_HOURS. Drift and quality
 * reports go to monitoring/, DriftDetected and QualityDropped to the bus, metrics to CloudWatch (EMF).
 */
export const handler = middy(async (event: unknown) => {
  const result = await runMonitorJob(lakeFromEnv(), event, { events: eventsFromEnv(), windowHours });
  publishMonitoringMetrics(metrics, result.entries);
  const summary = summarizeMonitorJob(result);
  for (const model of summary.models) {
    if (model.status === 'failed')
      logger.error('monitor failed', { model: model.model, error: model.summary });
    else
      logger.info(model.summary, {
        model: model.model,
        version: model.version,
        status: model.status,
        report: model.report,
      });
  }
  return summary;
})
  .use(injectLambdaContext(logger))
  .use(logMetrics(metrics));
