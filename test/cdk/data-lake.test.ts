import { App, Stack } from 'aws-cdk-lib';
import { Match } from 'aws-cdk-lib/assertions';
import { describe, expect, it } from 'vitest';
import { DataLake } from '../../lib/constructs/data-lake.ts';
import { ValidationError } from '../../lib/core/errors.ts';
import { flatten, logicalIdOf, property, synthesize } from './support.ts';

const { stack, template, json } = synthesize();
const lakeId = logicalIdOf(stack, stack.lake.bucket);
const keyId = logicalIdOf(stack, stack.lake.key);
const logsId = logicalIdOf(stack, stack.lake.accessLogsBucket);

describe('DataLake', () => {
  it('encrypts the lake with a rotating customer-managed key and versions it', () => {
    const lake = json.Resources[lakeId];
    expect(lake?.Properties).toMatchObject({
      BucketEncryption: {
        ServerSideEncryptionConfiguration: [
          {
            BucketKeyEnabled: true,
            ServerSideEncryptionByDefault: {
              SSEAlgorithm: 'aws:kms',
              KMSMasterKeyID: { 'Fn::GetAtt': [keyId, 'Arn'] },
            },
          },
        ],
      },
      VersioningConfiguration: { Status: 'Enabled' },
      PublicAccessBlockConfiguration: {
        BlockPublicAcls: true,
        BlockPublicPolicy: true,
        IgnorePublicAcls: true,
        RestrictPublicBuckets: true,
      },
    });
    expect(json.Resources[keyId]?.Properties).toMatchObject({ EnableKeyRotation: true });
  });

  it('keeps the lake and its key when the stack is deleted', () => {
    expect(json.Resources[lakeId]).toMatchObject({ DeletionPolicy: 'Retain' });
    expect(json.Resources[keyId]).toMatchObject({ DeletionPolicy: 'Retain' });
  });

  it('denies every request that does not use TLS 1.2 or later', () => {
    template.hasResourceProperties('AWS::S3::BucketPolicy', {
      Bucket: { Ref: lakeId },
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Effect: 'Deny',
            Principal: { AWS: '*' },
            Action: 's3:*',
            Condition: { Bool: { 'aws:SecureTransport': 'false' } },
          }),
          Match.objectLike({
            Effect: 'Deny',
            Action: 's3:*',
            Condition: { NumericLessThan: { 's3:TlsVersion': 1.2 } },
          }),
        ]),
      },
    });
  });

  it('writes server access logs to a separate TLS-only bucket through a bucket policy', () => {
    expect(json.Resources[lakeId]?.Properties?.LoggingConfiguration).toEqual({
      DestinationBucketName: { Ref: logsId },
      LogFilePrefix: 'lake/',
    });
    template.hasResourceProperties('AWS::S3::BucketPolicy', {
      Bucket: { Ref: logsId },
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
          Match.objectLike({
            Effect: 'Allow',
            Principal: { Service: 'logging.s3.amazonaws.com' },
            Action: 's3:PutObject',
            Condition: Match.objectLike({ ArnLike: { 'aws:SourceArn': { 'Fn::GetAtt': [lakeId, 'Arn'] } } }),
          }),
        ]),
      },
    });
  });

  it('publishes object events to EventBridge without a notifications custom resource', () => {
    expect(json.Resources[lakeId]?.Properties?.NotificationConfiguration).toEqual({
      EventBridgeConfiguration: { EventBridgeEnabled: true },
    });
    template.resourceCountIs('Custom::S3BucketNotifications', 0);
  });

  it('ages capture/ to Infrequent Access and expires abandoned staging objects', () => {
    const rules = property<{ Rules: unknown[] }>(json.Resources[lakeId], 'LifecycleConfiguration').Rules;
    expect(rules).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          Prefix: 'capture/',
          Transitions: [{ StorageClass: 'STANDARD_IA', TransitionInDays: 30 }],
          ExpirationInDays: 365,
        }),
        expect.objectContaining({ Prefix: 'curated-staging/', ExpirationInDays: 7 }),
        expect.objectContaining({ Prefix: 'models-staging/', ExpirationInDays: 7 }),
        expect.objectContaining({ NoncurrentVersionExpiration: { NoncurrentDays: 90 } }),
      ]),
    );
  });

  it('starts the ETL state machine for objects created under raw/ with the key and trigger as input', () => {
    const etlId = logicalIdOf(stack, stack.etl.stateMachine);
    const rules = Object.values(json.Resources).filter((resource) => resource.Type === 'AWS::Events::Rule');
    const rawRule = rules.find((rule) =>
      JSON.stringify(rule.Properties?.EventPattern ?? {}).includes('"prefix":"raw/"'),
    );
    expect(rawRule?.Properties?.EventPattern).toEqual({
      source: ['aws.s3'],
      'detail-type': ['Object Created'],
      detail: { bucket: { name: [{ Ref: lakeId }] }, object: { key: [{ prefix: 'raw/' }] } },
    });
    const targets = rawRule?.Properties?.Targets as Array<Record<string, unknown>>;
    expect(targets).toHaveLength(1);
    const target = targets[0] as {
      Arn: unknown;
      InputTransformer: { InputPathsMap: unknown; InputTemplate: string };
    };
    expect(flatten(target.Arn)).toBe(`<${etlId}>`);
    expect(target.InputTransformer.InputPathsMap).toEqual({ 'detail-object-key': '$.detail.object.key' });
    // Substitute a key the way EventBridge does (an unquoted placeholder receives a JSON string).
    const key = 'raw/churn/2024-05-01/part-0.csv';
    const input = JSON.parse(
      target.InputTransformer.InputTemplate.replace('<detail-object-key>', JSON.stringify(key)),
    ) as unknown;
    expect(input).toEqual({
      key,
      trigger: { source: 's3', detailType: 'Object Created' },
    });
  });

  it('rejects a lifecycle setting outside what S3 accepts, naming the value', () => {
    const stack = new Stack(new App(), 'Invalid');
    expect(() => new DataLake(stack, 'Lake', { captureInfrequentAccessAfterDays: 7 })).toThrow(
      ValidationError,
    );
    expect(() => new DataLake(stack, 'Lake2', { captureInfrequentAccessAfterDays: 7 })).toThrow(
      /captureInfrequentAccessAfterDays must be an integer between 30 and 3650, got 7/,
    );
  });
});
