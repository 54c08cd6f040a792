import { Aws, RemovalPolicy } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';

/** Properties of {@link LogEncryptionKey}. */
export interface LogEncryptionKeyProps {
  /** What happens to the key when the stack is deleted. @default RemovalPolicy.RETAIN */
  readonly removalPolicy?: RemovalPolicy;
}

/**
 * A customer-managed key (rotation on) that CloudWatch Logs in this account and region may use, for
 * log groups that carry execution data (state-machine inputs and outputs, API access logs).
 */
export class LogEncryptionKey extends Construct {
  /** The key. */
  public readonly key: kms.Key;

  constructor(scope: Construct, id: string, props: LogEncryptionKeyProps = {}) {
    super(scope, id);
    this.key = new kms.Key(this, 'Key', {
      description: 'Kiln log encryption key',
      enableKeyRotation: true,
      removalPolicy: props.removalPolicy ?? RemovalPolicy.RETAIN,
    });
    // CloudWatch Logs encrypts with the key itself (not through a caller's role), so it needs a key-policy
    // grant, limited to log groups of this account and region.
    this.key.addToResourcePolicy(
      new iam.PolicyStatement({
        principals: [new iam.ServicePrincipal(`logs.${Aws.REGION}.amazonaws.com`)],
        actions: ['kms:Encrypt*', 'kms:Decrypt*', 'kms:ReEncrypt*', 'kms:GenerateDataKey*', 'kms:Describe*'],
        resources: ['*'],
        conditions: {
          ArnLike: {
            'kms:EncryptionContext:aws:logs:arn': `arn:${Aws.PARTITION}:logs:${Aws.REGION}:${Aws.ACCOUNT_ID}:log-group:*`,
          },
        },
      }),
    );
  }

  /** A log group encrypted with this key. */
  public logGroup(scope: Construct, id: string, retention: logs.RetentionDays): logs.LogGroup {
    return new logs.LogGroup(scope, id, {
      encryptionKey: this.key,
      retention,
      removalPolicy: RemovalPolicy.DESTROY,
    });
  }
}
