import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Stack, Validations } from 'aws-cdk-lib';
import * as cognito from 'aws-cdk-lib/aws-cognito';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { AwsSolutionsChecks } from 'cdk-nag';
import type { IConstruct } from 'constructs';
import { afterAll, describe, expect, it } from 'vitest';
import { KilnPlatformStack, type KilnPlatformStackProps } from '../../lib/stacks/platform-stack.ts';
import { createPlatformApp, platformApp } from '../../lib/stacks/synth.ts';

const outdirs: string[] = [];
const outdir = () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-nag-'));
  outdirs.push(dir);
  return dir;
};
afterAll(() => {
  for (const dir of outdirs) rmSync(dir, { recursive: true, force: true });
});

/** Unacknowledged AwsSolutions findings under `scope`, as `rule @ path` lines (readable on failure). */
function findings(scope: IConstruct): string[] {
  const report = new AwsSolutionsChecks().validateScope(scope);
  return report.violations.flatMap((violation) =>
    violation.violatingResources.map((resource) => `${violation.ruleName} @ ${resource.constructPath}`),
  );
}

/** Every acknowledgment recorded under `scope`: rule id, reason, and where. */
function acknowledgments(scope: IConstruct): Array<{ id: string; reason: string; path: string }> {
  const found: Array<{ id: string; reason: string; path: string }> = [];
  for (const construct of scope.node.findAll()) {
    for (const entry of construct.node.metadata) {
      if (entry.type !== Validations.ACKNOWLEDGED_RULES_METADATA_KEY) continue;
      for (const [id, reason] of Object.entries(entry.data as Record<string, unknown>)) {
        found.push({ id, reason: String(reason), path: construct.node.path });
      }
    }
  }
  return found;
}

describe('cdk-nag AwsSolutions', () => {
  it('synthesizes the app with the validation plugin (and CloudFormation validation) without throwing', () => {
    const { app } = createPlatformApp({
      nag: true,
      bundling: false,
      skipAssetStaging: true,
      outdir: outdir(),
    });
    expect(() => app.synth()).not.toThrow();
  });

  it.each<[string, KilnPlatformStackProps]>([
    ['sagemaker serving', {}],
    ['lambda serving', { servingMode: 'lambda' }],
    ['API keys', { inferenceAuthMode: 'apiKey', registryAuthMode: 'apiKey' }],
    ['EBS-backed endpoint instances', { inferenceInstanceType: 'ml.c5.xlarge' }],
  ])('reports no unacknowledged finding (%s)', (_name, stackProps) => {
    const { stack } = createPlatformApp({ bundling: false, skipAssetStaging: true, stackProps });
    expect(findings(stack)).toEqual([]);
  });

  it('reports no unacknowledged finding with Cognito authorizers', () => {
    const app = platformApp({ context: { 'aws:cdk:bundling-stacks': [] } });
    const auth = new Stack(app, 'Auth');
    const userPool = cognito.UserPool.fromUserPoolId(auth, 'Pool', 'us-east-1_example');
    const stack = new KilnPlatformStack(app, 'KilnPlatform', {
      inferenceAuthMode: 'cognito',
      registryAuthMode: 'cognito',
      userPool,
    });
    expect(findings(stack)).toEqual([]);
  });

  it('still catches a new violation (the check is live, not blanket-suppressed)', () => {
    const { stack } = createPlatformApp({ bundling: false, skipAssetStaging: true });
    new s3.Bucket(stack, 'CarelessBucket');
    const careless = findings(stack).filter((finding) => finding.includes('/CarelessBucket/'));
    expect(careless).toEqual(
      expect.arrayContaining([
        'AwsSolutions-S1 @ KilnPlatform/CarelessBucket/Resource',
        'AwsSolutions-S10 @ KilnPlatform/CarelessBucket/Resource',
      ]),
    );
  });

  it('acknowledges only specific findings, each with a written reason', () => {
    const { stack } = createPlatformApp({ bundling: false, skipAssetStaging: true });
    const acknowledged = acknowledgments(stack);
    expect(acknowledged.length).toBeGreaterThan(0);
    for (const { id, reason, path } of acknowledged) {
      expect(id, path).toMatch(/^Annotation::AwsSolutions-[A-Z]+\d+(\[.+\])?$/);
      // A bare IAM5 acknowledgment would silence every wildcard on the construct: each names one finding.
      if (id.includes('AwsSolutions-IAM5')) expect(id, path).toMatch(/\[(Action|Resource)::.+\]$/);
      expect(reason.length, `${id} @ ${path}`).toBeGreaterThanOrEqual(40);
    }
  });
});
