import { Stack, Validations } from 'aws-cdk-lib';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import type { IConstruct } from 'constructs';

/**
 * The flat form cdk-nag uses for a CloudFormation reference inside a finding id (`<LogicalId.Arn>`,
 * `<LogicalId>`, joins concatenated), so an acknowledgment can name exactly one resource pattern.
 */
export function nagReference(scope: IConstruct, token: string): string {
  return flatten(Stack.of(scope).resolve(token));
}

function flatten(value: unknown): string {
  if (value === undefined) return '';
  if (typeof value === 'string') return value.replace(/\$\{/g, '<').replace(/\}/g, '>');
  if (value !== null && typeof value === 'object') {
    const record = value as Record<string, unknown>;
    const join = record['Fn::Join'];
    if (Array.isArray(join) && typeof join[0] === 'string' && Array.isArray(join[1])) {
      return join[1].map(flatten).join(join[0]);
    }
    if ('Fn::Sub' in record) return flatten(record['Fn::Sub']);
    const getAtt = record['Fn::GetAtt'];
    if (Array.isArray(getAtt)) return `<${flatten(getAtt[0])}.${flatten(getAtt[1])}>`;
    if ('Ref' in record) return `<${flatten(record.Ref)}>`;
  }
  return JSON.stringify(value);
}

/** Acknowledge an IAM5 finding for one action wildcard produced by a CDK `grant*` helper. */
export function acknowledgeGrantActions(scope: IConstruct, actions: readonly string[], why: string): void {
  for (const action of actions) {
    Validations.of(scope).acknowledge({
      id: `AwsSolutions-IAM5[Action::${action}]`,
      reason: `${action} is an action group of CDK's ${why}; the resources stay scoped.`,
    });
  }
}

/** S3/KMS action groups emitted by `bucket.grantRead/grantPut/grantReadWrite/grantDelete`. */
export const BUCKET_GRANT_ACTIONS: readonly string[] = [
  's3:GetObject*',
  's3:GetBucket*',
  's3:List*',
  's3:Abort*',
  's3:DeleteObject*',
  'kms:GenerateDataKey*',
  'kms:ReEncrypt*',
];

/**
 * Acknowledge the IAM5 findings of object-prefix grants (`<bucket arn>/<prefix>*`): in the lake layout a
 * prefix is the unit of least privilege, so a wildcard below it is the narrowest useful grant.
 */
export function acknowledgePrefixGrants(
  scope: IConstruct,
  bucket: s3.IBucket,
  prefixes: readonly string[],
): void {
  const bucketRef = nagReference(scope, bucket.bucketArn);
  for (const prefix of prefixes) {
    Validations.of(scope).acknowledge({
      id: `AwsSolutions-IAM5[Resource::${bucketRef}/${prefix}*]`,
      reason: `Objects under the lake prefix ${prefix}: the prefix is the unit of least privilege in the lake layout.`,
    });
  }
}

/** Acknowledge the `<function arn>:*` finding (versions and aliases) of roles invoking these functions. */
export function acknowledgeInvokeVersions(scope: IConstruct, functions: readonly lambda.IFunction[]): void {
  for (const fn of functions) {
    Validations.of(scope).acknowledge({
      id: `AwsSolutions-IAM5[Resource::${nagReference(scope, fn.functionArn)}:*]`,
      reason: 'lambda:InvokeFunction on the versions and aliases of one function this principal invokes.',
    });
  }
}
