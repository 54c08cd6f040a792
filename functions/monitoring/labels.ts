import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import { logMetrics } from '@aws-lambda-powertools/metrics/middleware';
import middy from '@middy/core';
import { publishQuality } from '../../lib/monitoring/cloudwatch.ts';
import { ingestLandedLabels } from '../../lib/monitoring/labels.ts';
import {
  MONITORING_NAMESPACE,
  MONITORING_SERVICE,
  MonitoringMetrics,
} from '../../lib/monitoring/metric-names.ts';
import { lakeFromEnv } from '../../lib/store/from-env.ts';
import { eventsFromEnv, logger } from '../lib/runtime.ts';

const metrics = new Metrics({ namespace: MONITORING_NAMESPACE, serviceName: MONITORING_SERVICE });

/**
 * A label file landed under labels/<model>/ (S3 Object Created via EventBridge): ingest it, report unknown
 * request ids, recompute the model's quality per version and publish QualityDropped when it fell.
 */
export const handler = middy(async (event: unknown) => {
  const { ingest, quality } = await ingestLandedLabels(lakeFromEnv(), event, { events: eventsFromEnv() });
  publishQuality(metrics, quality);
  for (const version of quality.versions) {
    if (version.value !== null) {
      metrics.addMetric(MonitoringMetrics.qualityDropped, MetricUnit.Count, version.dropped ? 1 : 0);
    }
  }
  logger.info('labels ingested', {
    model: ingest.model,
    key: ingest.key,
    accepted: ingest.accepted,
    invalid: ingest.invalid,
    unknownRequestIds: ingest.unknownRequestIds,
    alreadyIngested: ingest.alreadyIngested,
    quality: quality.summary,
  });
  const { invalidExamples: _invalid, unknownExamples: _unknown, ...brief } = ingest;
  return { ingest: brief, quality: { key: quality.key, summary: quality.summary, dropped: quality.dropped } };
})
  .use(injectLambdaContext(logger))
  .use(logMetrics(metrics));
