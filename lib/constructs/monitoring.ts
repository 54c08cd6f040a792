import { Duration, Names } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as logs from 'aws-cdk-lib/aws-logs';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import {
  MonitoringDimensions as D,
  MonitoringMetrics as M,
  MONITORING_NAMESPACE,
  MONITORING_SERVICE,
} from '../monitoring/metric-names.ts';
import { lake } from '../store/layout.ts';
import { LakePrefix } from './data-lake.ts';
import { INFERENCE_VARIANT_NAME, type InferenceEndpoint } from './inference-endpoint.ts';
import { KilnContainerFunction, type KilnHandler, KilnNodeFunction } from './kiln-function.ts';
import { acknowledgeGrantActions, acknowledgePrefixGrants, BUCKET_GRANT_ACTIONS } from './nag.ts';
import { assertIntegerInRange } from './validate.ts';

/** Where label files land to be ingested: `labels/<model>/<file>`. */
export const LABELS_LANDING_PREFIX = lake.labelsLandingPrefix();

/** Properties of {@link Monitoring}. */
export interface MonitoringProps {
  /** The lake: capture/, models/ and registry/ are read, monitoring/ written, labels/ watched. */
  readonly lakeBucket: s3.IBucket;
  /** The platform bus: DriftDetected, QualityDropped and LabelsIngested go here. */
  readonly bus: events.IEventBus;
  /** How often the monitor checks every model's champion (whole minutes, 1 minute to 1 day). @default Duration.hours(1) */
  readonly schedule?: Duration;
  /** Hours of captured traffic each scheduled run looks back over (1–9600). @default 24 */
  readonly windowHours?: number;
  /**
   * The SageMaker endpoint: its variants' invocations, errors and latency go on the dashboard, and its 5XX and
   * latency alarms (the ones that already roll back a blue/green update) join {@link Monitoring.rollbackAlarms}.
   * @default - no SageMaker widgets
   */
  readonly endpoint?: InferenceEndpoint;
  /** Endpoint variants shown on the dashboard. @default [INFERENCE_VARIANT_NAME] */
  readonly variantNames?: readonly string[];
  /**
   * The Lambda-hosted model (lambda serving mode): its invocations, errors and duration go on the dashboard,
   * with an error and a latency alarm created here.
   * @default - none
   */
  readonly modelHost?: lambda.IFunction;
  /** Errors per minute of the Lambda model host at or above which its error alarm fires (1–1000000). @default 5 */
  readonly errorAlarmThreshold?: number;
  /** p99 duration of the Lambda model host above which its latency alarm fires. @default Duration.seconds(1) */
  readonly latencyAlarmThreshold?: Duration;
  /** Log retention of the two handlers. @default logs.RetentionDays.ONE_MONTH */
  readonly logRetention?: logs.RetentionDays;
}

/**
 * Model monitoring on AWS: a scheduled monitor Lambda (drift and quality reports, EMF metrics, events), a
 * labels Lambda started by label files landing under `labels/`, a CloudWatch dashboard (serving latency,
 * errors and invocations per variant; drift and quality per model) and the alarms that drive rollback.
 */
export class Monitoring extends Construct {
  /** `functions/monitoring/monitor.ts`. */
  public readonly monitorFunction: KilnHandler;
  /** `functions/monitoring/labels.ts` (a container image: it reads label files with DuckDB). */
  public readonly labelsFunction: KilnHandler;
  /** The schedule that starts the monitor. */
  public readonly scheduleRule: events.Rule;
  /** S3 Object Created under `labels/` → the labels function. */
  public readonly labelsRule: events.Rule;
  /** The monitoring dashboard. */
  public readonly dashboard: cloudwatch.Dashboard;
  /** Any model's drift report found drift (aggregate `DriftDetected` ≥ 1). */
  public readonly driftAlarm: cloudwatch.Alarm;
  /** Any model's prediction distribution drifted (aggregate `PredictionDrift` ≥ 1). */
  public readonly predictionDriftAlarm: cloudwatch.Alarm;
  /** Any model's quality on late labels dropped below its held-out metric (aggregate `QualityDropped` ≥ 1). */
  public readonly qualityAlarm: cloudwatch.Alarm;
  /** Serving 5XX errors: the endpoint's alarm, or one on the Lambda model host. */
  public readonly errorAlarm?: cloudwatch.IAlarm;
  /** Serving latency: the endpoint's alarm, or one on the Lambda model host. */
  public readonly latencyAlarm?: cloudwatch.IAlarm;
  /** Every alarm a model update should roll back on: errors, latency, prediction drift and quality. */
  public readonly rollbackAlarms: cloudwatch.IAlarm[];

  constructor(scope: Construct, id: string, props: MonitoringProps) {
    super(scope, id);
    const schedule = props.schedule ?? Duration.hours(1);
    const scheduleMinutes = schedule.toMinutes({ integral: false });
    assertIntegerInRange('schedule (minutes)', scheduleMinutes, 1, 1440);
    const windowHours = props.windowHours ?? 24;
    assertIntegerInRange('windowHours', windowHours, 1, 9600);
    const errorThreshold = props.errorAlarmThreshold ?? 5;
    assertIntegerInRange('errorAlarmThreshold', errorThreshold, 1, 1_000_000);
    const latencyThreshold = props.latencyAlarmThreshold ?? Duration.seconds(1);
    assertIntegerInRange('latencyAlarmThreshold (ms)', latencyThreshold.toMilliseconds(), 1, 900_000);
    const variantNames = props.variantNames ?? [INFERENCE_VARIANT_NAME];
    if (variantNames.length === 0) throw new RangeError('variantNames must name at least one variant');
    const bucket = props.lakeBucket;

    this.monitorFunction = new KilnNodeFunction(this, 'Monitor', {
      handler: 'functions/monitoring/monitor.handler',
      lake: bucket,
      bus: props.bus,
      serviceName: MONITORING_SERVICE,
      logRetention: props.logRetention,
      memorySize: 2048,
      timeout: Duration.minutes(10),
      environment: { KILN_MONITOR_WINDOW_HOURS: String(windowHours) },
    });
    // Reads what it compares (capture/, the baseline in models/, versions in registry/, labels in
    // monitoring/) and writes only monitoring/; never deletes.
    for (const prefix of [
      LakePrefix.capture,
      LakePrefix.models,
      LakePrefix.registry,
      LakePrefix.monitoring,
    ]) {
      bucket.grantRead(this.monitorFunction, `${prefix}*`);
    }
    bucket.grantPut(this.monitorFunction, `${LakePrefix.monitoring}*`);
    props.bus.grantPutEventsTo(this.monitorFunction);

    this.labelsFunction = new KilnContainerFunction(this, 'Labels', {
      handler: 'functions/monitoring/labels.handler',
      lake: bucket,
      bus: props.bus,
      serviceName: MONITORING_SERVICE,
      logRetention: props.logRetention,
      timeout: Duration.minutes(15),
    });
    // The landed file, the captures it is joined to, the registry's held-out metrics; labels and quality
    // reports go to monitoring/. models/ is not needed: quality compares predictions already captured.
    for (const prefix of [
      LABELS_LANDING_PREFIX,
      LakePrefix.capture,
      LakePrefix.registry,
      LakePrefix.monitoring,
    ]) {
      bucket.grantRead(this.labelsFunction, `${prefix}*`);
    }
    bucket.grantPut(this.labelsFunction, `${LakePrefix.monitoring}*`);
    props.bus.grantPutEventsTo(this.labelsFunction);

    this.scheduleRule = new events.Rule(this, 'Schedule', {
      description: `Run the Kiln monitor on every model's champion every ${scheduleMinutes} minutes`,
      schedule: events.Schedule.rate(schedule),
      targets: [
        new targets.LambdaFunction(this.monitorFunction.function, {
          retryAttempts: 2,
          maxEventAge: Duration.hours(1),
        }),
      ],
    });
    // S3 publishes Object Created to the default bus (DataLake turns EventBridge notifications on).
    this.labelsRule = new events.Rule(this, 'LabelsLanded', {
      description: `Ingest label files landing under ${LABELS_LANDING_PREFIX} of the Kiln lake`,
      eventPattern: {
        source: ['aws.s3'],
        detailType: ['Object Created'],
        detail: {
          bucket: { name: [bucket.bucketName] },
          object: { key: events.Match.prefix(LABELS_LANDING_PREFIX) },
        },
      },
      targets: [
        new targets.LambdaFunction(this.labelsFunction.function, {
          retryAttempts: 2,
          maxEventAge: Duration.hours(6),
        }),
      ],
    });

    // Alarms watch the aggregates (only the `service` dimension): model names are not known at deploy time.
    const period = Duration.minutes(Math.max(5, scheduleMinutes));
    const baseName = Names.uniqueResourceName(this, { maxLength: 200 });
    const aggregate = (metricName: string) =>
      new cloudwatch.Metric({
        namespace: MONITORING_NAMESPACE,
        metricName,
        dimensionsMap: { [D.service]: MONITORING_SERVICE },
        statistic: cloudwatch.Stats.MAXIMUM,
        period,
      });
    const signalAlarm = (id: string, suffix: string, metricName: string, description: string) =>
      new cloudwatch.Alarm(this, id, {
        alarmName: `${baseName}-${suffix}`,
        alarmDescription: description,
        metric: aggregate(metricName),
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
    this.driftAlarm = signalAlarm(
      'DriftAlarm',
      'drift',
      M.driftDetected,
      'A Kiln drift report found drifted features or prediction drift (see monitoring/<model>/<version>/drift/)',
    );
    this.predictionDriftAlarm = signalAlarm(
      'PredictionDriftAlarm',
      'prediction-drift',
      M.predictionDrift,
      "A Kiln model's prediction distribution drifted from its held-out baseline; rolls back a model update",
    );
    this.qualityAlarm = signalAlarm(
      'QualityAlarm',
      'quality-drop',
      M.qualityDropped,
      "A Kiln model's accuracy or RMSE on late labels fell below its held-out metric; rolls back a model update",
    );

    if (props.endpoint) {
      this.errorAlarm = props.endpoint.errorAlarm;
      this.latencyAlarm = props.endpoint.latencyAlarm;
    } else if (props.modelHost) {
      const host = props.modelHost;
      this.errorAlarm = new cloudwatch.Alarm(this, 'ModelHostErrorAlarm', {
        alarmName: `${baseName}-model-host-errors`,
        alarmDescription: 'The Lambda model host fails requests; rolls back a model update',
        metric: host.metricErrors({ period: Duration.minutes(1), statistic: cloudwatch.Stats.SUM }),
        threshold: errorThreshold,
        evaluationPeriods: 2,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
      this.latencyAlarm = new cloudwatch.Alarm(this, 'ModelHostLatencyAlarm', {
        alarmName: `${baseName}-model-host-latency`,
        alarmDescription: 'The Lambda model host is slow (p99 duration); rolls back a model update',
        metric: host.metricDuration({ period: Duration.minutes(1), statistic: cloudwatch.Stats.p(99) }),
        threshold: latencyThreshold.toMilliseconds(),
        evaluationPeriods: 3,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
    }
    this.rollbackAlarms = [
      ...(this.errorAlarm ? [this.errorAlarm] : []),
      ...(this.latencyAlarm ? [this.latencyAlarm] : []),
      this.predictionDriftAlarm,
      this.qualityAlarm,
    ];

    this.dashboard = new cloudwatch.Dashboard(this, 'Dashboard', {
      defaultInterval: Duration.days(1),
    });
    this.dashboard.addWidgets(
      new cloudwatch.TextWidget({
        markdown:
          '# Kiln models\nServing per variant (AWS/SageMaker or the Lambda model host), then drift and quality per model from the monitor (`Kiln/Monitoring`). Reports: `monitoring/<model>/<version>/drift/` in the lake.',
        width: 24,
        height: 2,
      }),
    );
    if (props.endpoint) this.dashboard.addWidgets(...endpointWidgets(props.endpoint, variantNames));
    if (props.modelHost) this.dashboard.addWidgets(...modelHostWidgets(props.modelHost));
    this.dashboard.addWidgets(...monitoringWidgets(period));
    this.dashboard.addWidgets(
      new cloudwatch.AlarmStatusWidget({
        title: 'Rollback and drift alarms',
        alarms: [this.driftAlarm, ...this.rollbackAlarms],
        width: 24,
      }),
    );

    acknowledgeGrantActions(this, BUCKET_GRANT_ACTIONS, 'bucket.grant* helpers');
    acknowledgePrefixGrants(this, bucket, [
      LakePrefix.capture,
      LakePrefix.models,
      LakePrefix.registry,
      LakePrefix.monitoring,
      LABELS_LANDING_PREFIX,
    ]);
  }
}

/** Invocations, errors and latency of each endpoint variant, from SageMaker's own metrics. */
function endpointWidgets(endpoint: InferenceEndpoint, variants: readonly string[]): cloudwatch.IWidget[] {
  const metric = (variant: string, metricName: string, statistic: string, label: string) =>
    new cloudwatch.Metric({
      namespace: 'AWS/SageMaker',
      metricName,
      dimensionsMap: { EndpointName: endpoint.endpointName, VariantName: variant },
      statistic,
      period: Duration.minutes(1),
      label: `${variant} ${label}`,
    });
  return [
    new cloudwatch.GraphWidget({
      title: 'Invocations per variant',
      left: variants.map((v) => metric(v, 'Invocations', cloudwatch.Stats.SUM, 'invocations')),
      width: 8,
    }),
    new cloudwatch.GraphWidget({
      title: 'Errors per variant',
      left: variants.flatMap((v) => [
        metric(v, 'Invocation5XXErrors', cloudwatch.Stats.SUM, '5XX'),
        metric(v, 'Invocation4XXErrors', cloudwatch.Stats.SUM, '4XX'),
      ]),
      width: 8,
    }),
    new cloudwatch.GraphWidget({
      title: 'Model latency per variant (µs)',
      left: variants.flatMap((v) => [
        metric(v, 'ModelLatency', cloudwatch.Stats.p(50), 'p50'),
        metric(v, 'ModelLatency', cloudwatch.Stats.p(99), 'p99'),
        metric(v, 'OverheadLatency', cloudwatch.Stats.AVERAGE, 'overhead'),
      ]),
      width: 8,
    }),
  ];
}

/** Invocations, errors and duration of the Lambda model host. */
function modelHostWidgets(host: lambda.IFunction): cloudwatch.IWidget[] {
  const period = Duration.minutes(1);
  return [
    new cloudwatch.GraphWidget({
      title: 'Model host invocations',
      left: [host.metricInvocations({ period })],
      width: 8,
    }),
    new cloudwatch.GraphWidget({
      title: 'Model host errors',
      left: [host.metricErrors({ period })],
      width: 8,
    }),
    new cloudwatch.GraphWidget({
      title: 'Model host duration (ms)',
      left: [
        host.metricDuration({ period, statistic: cloudwatch.Stats.p(50) }),
        host.metricDuration({ period, statistic: cloudwatch.Stats.p(99) }),
      ],
      width: 8,
    }),
  ];
}

/** Drift and quality per model version: search expressions, so every model appears without redeploying. */
function monitoringWidgets(period: Duration): cloudwatch.IWidget[] {
  const search = (dimensions: string[], metricName: string, statistic: string, label: string) =>
    new cloudwatch.MathExpression({
      expression: `SEARCH('{${MONITORING_NAMESPACE},${[D.service, ...dimensions].join(',')}} MetricName="${metricName}"', '${statistic}', ${period.toSeconds()})`,
      usingMetrics: {},
      label,
      period,
    });
  const perVersion = [D.model, D.version];
  return [
    new cloudwatch.GraphWidget({
      title: 'Feature drift (PSI) per model, version and feature',
      left: [search([...perVersion, D.feature], M.featureDriftScore, 'Maximum', 'PSI')],
      leftAnnotations: [{ value: 0.1, label: 'moderate shift', color: '#ff7f0e' }],
      width: 12,
    }),
    new cloudwatch.GraphWidget({
      title: 'Drifted features and prediction drift per model version',
      left: [search(perVersion, M.driftedFeatures, 'Maximum', 'drifted features')],
      right: [search(perVersion, M.predictionPsi, 'Maximum', 'prediction PSI')],
      width: 12,
    }),
    new cloudwatch.GraphWidget({
      title: 'Quality on late labels per model version',
      left: [search(perVersion, M.accuracy, 'Average', 'accuracy')],
      right: [search(perVersion, M.rmse, 'Average', 'RMSE')],
      width: 12,
    }),
    new cloudwatch.GraphWidget({
      title: 'Monitored traffic and labels',
      left: [
        search(perVersion, M.monitoredRows, 'Maximum', 'rows monitored'),
        search(perVersion, M.labelledRows, 'Maximum', 'rows labelled'),
      ],
      right: [
        search(perVersion, M.rowsWithUnknownColumns, 'Maximum', 'rows with unknown columns'),
        search(perVersion, M.rowsMissingFeatures, 'Maximum', 'rows missing features'),
      ],
      width: 12,
    }),
  ];
}
