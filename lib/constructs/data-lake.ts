import { Duration, RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { assertIntegerInRange } from './validate.ts';

/**
 * Top-level key prefixes of the lake (DESIGN.md "Data"; `lib/store/layout.ts` builds the keys under them).
 * The `*-staging/` prefixes hold work in progress (shard output before finalize, training output before
 * registration) so that curated/ and models/ only ever contain committed artifacts. Grants are per prefix.
 */
export const LakePrefix = {
  raw: 'raw/',
  /** What the ETL learnt about each raw object (format, hash, or why it was rejected). */
  index: 'index/',
  /** Schema contract per dataset. */
  schemas: 'schemas/',
  curated: 'curated/',
  /** User-supplied held-out files for evaluation (content-addressed, immutable). */
  holdout: 'holdout/',
  curatedStaging: 'curated-staging/',
  quarantine: 'quarantine/',
  models: 'models/',
  modelsStaging: 'models-staging/',
  registry: 'registry/',
  capture: 'capture/',
  monitoring: 'monitoring/',
  /** Run reports and failure records of the pipelines. */
  runs: 'runs/',
} as const;

/** A lake prefix such as `raw/`. */
export type LakePrefixValue = (typeof LakePrefix)[keyof typeof LakePrefix];

/** Properties of {@link DataLake}. */
export interface DataLakeProps {
  /**
   * What happens to the lake, its key and the access-log bucket when the stack is deleted.
   * @default RemovalPolicy.RETAIN — the lake is the system of record
   */
  readonly removalPolicy?: RemovalPolicy;
  /**
   * Days after which raw/ objects move to S3 Standard-IA (S3 allows 30 or more).
   * @default 90
   */
  readonly rawInfrequentAccessAfterDays?: number;
  /**
   * Days after which capture/ objects (endpoint request/response capture) move to Standard-IA.
   * @default 30
   */
  readonly captureInfrequentAccessAfterDays?: number;
  /**
   * Days after which capture/ objects expire; must exceed the IA transition.
   * @default 365
   */
  readonly captureExpirationDays?: number;
  /**
   * Days after which abandoned objects under the `*-staging/` prefixes expire.
   * @default 7
   */
  readonly stagingExpirationDays?: number;
  /**
   * Days after which non-current object versions expire.
   * @default 90
   */
  readonly noncurrentVersionExpirationDays?: number;
  /**
   * Days server access logs are kept.
   * @default 365
   */
  readonly accessLogRetentionDays?: number;
}

/** Options of {@link DataLake.onRawObjectCreated}. */
export interface RawObjectCreatedOptions {
  /** Target of the rule, e.g. the ETL state machine. @default - add targets later with `rule.addTarget` */
  readonly target?: events.IRuleTarget;
  /** Rule description. @default - a description naming the lake prefix */
  readonly description?: string;
}

/**
 * The Kiln data lake: one SSE-KMS bucket with the fixed key layout, TLS-only, versioned, access-logged
 * and publishing object events to EventBridge.
 */
export class DataLake extends Construct {
  /** The lake bucket. */
  public readonly bucket: s3.Bucket;
  /** Customer-managed key encrypting the lake (rotation on). */
  public readonly key: kms.Key;
  /** Bucket receiving the lake's server access logs (SSE-S3: S3 log delivery cannot use SSE-KMS). */
  public readonly accessLogsBucket: s3.Bucket;
  /** `s3://<bucket>` — the form handlers receive in `KILN_LAKE`. */
  public readonly lakeUri: string;

  constructor(scope: Construct, id: string, props: DataLakeProps = {}) {
    super(scope, id);
    const rawIa = props.rawInfrequentAccessAfterDays ?? 90;
    const captureIa = props.captureInfrequentAccessAfterDays ?? 30;
    const captureExpiry = props.captureExpirationDays ?? 365;
    const stagingExpiry = props.stagingExpirationDays ?? 7;
    const noncurrentExpiry = props.noncurrentVersionExpirationDays ?? 90;
    const logRetention = props.accessLogRetentionDays ?? 365;
    assertIntegerInRange('rawInfrequentAccessAfterDays', rawIa, 30, 3650);
    assertIntegerInRange('captureInfrequentAccessAfterDays', captureIa, 30, 3650);
    assertIntegerInRange('captureExpirationDays', captureExpiry, captureIa + 1, 36500);
    assertIntegerInRange('stagingExpirationDays', stagingExpiry, 1, 365);
    assertIntegerInRange('noncurrentVersionExpirationDays', noncurrentExpiry, 1, 36500);
    assertIntegerInRange('accessLogRetentionDays', logRetention, 1, 36500);
    const removalPolicy = props.removalPolicy ?? RemovalPolicy.RETAIN;

    this.key = new kms.Key(this, 'Key', {
      description: 'Kiln data lake encryption key',
      enableKeyRotation: true,
      removalPolicy,
    });

    this.accessLogsBucket = new s3.Bucket(this, 'AccessLogs', {
      encryption: s3.BucketEncryption.S3_MANAGED,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      enforceSSL: true,
      minimumTLSVersion: 1.2,
      versioned: true,
      removalPolicy,
      lifecycleRules: [
        {
          id: 'expire-access-logs',
          expiration: Duration.days(logRetention),
          noncurrentVersionExpiration: Duration.days(1),
        },
      ],
    });
    Validations.of(this.accessLogsBucket).acknowledge({
      id: 'AwsSolutions-S1',
      reason:
        'This bucket is the server-access-log destination of the lake; logging it into itself would loop and a third bucket would only move the finding.',
    });

    this.bucket = new s3.Bucket(this, 'Bucket', {
      encryption: s3.BucketEncryption.KMS,
      encryptionKey: this.key,
      bucketKeyEnabled: true,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      enforceSSL: true,
      minimumTLSVersion: 1.2,
      versioned: true,
      serverAccessLogsBucket: this.accessLogsBucket,
      serverAccessLogsPrefix: 'lake/',
      removalPolicy,
      lifecycleRules: [
        {
          id: 'all-abort-incomplete-uploads-and-old-versions',
          abortIncompleteMultipartUploadAfter: Duration.days(2),
          noncurrentVersionExpiration: Duration.days(noncurrentExpiry),
        },
        {
          id: 'raw-to-infrequent-access',
          prefix: LakePrefix.raw,
          transitions: [
            { storageClass: s3.StorageClass.INFREQUENT_ACCESS, transitionAfter: Duration.days(rawIa) },
          ],
        },
        {
          id: 'capture-to-infrequent-access-then-expire',
          prefix: LakePrefix.capture,
          transitions: [
            { storageClass: s3.StorageClass.INFREQUENT_ACCESS, transitionAfter: Duration.days(captureIa) },
          ],
          expiration: Duration.days(captureExpiry),
        },
        {
          id: 'quarantine-to-infrequent-access',
          prefix: LakePrefix.quarantine,
          transitions: [
            { storageClass: s3.StorageClass.INFREQUENT_ACCESS, transitionAfter: Duration.days(30) },
          ],
        },
        {
          id: 'expire-curated-staging',
          prefix: LakePrefix.curatedStaging,
          expiration: Duration.days(stagingExpiry),
        },
        {
          id: 'expire-models-staging',
          prefix: LakePrefix.modelsStaging,
          expiration: Duration.days(stagingExpiry),
        },
      ],
    });
    // Set on the L1 rather than via `eventBridgeEnabled`, which deploys a notifications custom-resource Lambda.
    const cfnBucket = this.bucket.node.defaultChild as s3.CfnBucket;
    cfnBucket.notificationConfiguration = { eventBridgeConfiguration: { eventBridgeEnabled: true } };

    this.lakeUri = `s3://${this.bucket.bucketName}`;
  }

  /** `s3://<bucket>/<prefix>` for a lake prefix. */
  public s3Uri(prefix: LakePrefixValue): string {
    return `${this.lakeUri}/${prefix}`;
  }

  /**
   * A rule on the default event bus matching S3 "Object Created" events for keys under `raw/` of this lake.
   */
  public onRawObjectCreated(id: string, options: RawObjectCreatedOptions = {}): events.Rule {
    const rule = new events.Rule(this, id, {
      description: options.description ?? `Objects created under ${LakePrefix.raw} of the Kiln lake`,
      eventPattern: {
        source: ['aws.s3'],
        detailType: ['Object Created'],
        detail: {
          bucket: { name: [this.bucket.bucketName] },
          object: { key: events.Match.prefix(LakePrefix.raw) },
        },
      },
    });
    if (options.target) rule.addTarget(options.target);
    return rule;
  }
}
