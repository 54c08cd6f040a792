import { Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as ecr from 'aws-cdk-lib/aws-ecr';
import { describe, expect, it } from 'vitest';
import { KilnPlatformStack } from '../../lib/stacks/platform-stack.ts';
import { platformApp } from '../../lib/stacks/synth.ts';

describe('bring-your-own training images on AWS', () => {
  it('lets the training role pull from exactly the listed repositories', () => {
    const app = platformApp({ context: { 'aws:cdk:bundling-stacks': [] } });
    const repositories = new Stack(app, 'Repositories');
    const byo = new ecr.Repository(repositories, 'Trainer', { repositoryName: 'team-trainer' });
    const stack = new KilnPlatformStack(app, 'Platform', {
      byoImageRepositories: [byo],
      byoTrainingInstanceType: 'ml.g5.2xlarge',
    });
    const policies = Template.fromStack(stack).findResources('AWS::IAM::Policy', {
      Properties: {
        PolicyDocument: {
          Statement: Match.arrayWith([
            Match.objectLike({ Action: Match.arrayWith(['ecr:BatchGetImage']), Resource: Match.anyValue() }),
          ]),
        },
      },
    });
    const training = Object.entries(policies).find(([id]) => id.startsWith('TrainingTrainingRole'));
    const statements = JSON.stringify(training?.[1]);
    // The BYO repository's ARN (exported by the stack that owns it) sits next to the built-in image's repository.
    expect(statements).toContain('"StackName":"Repositories"');
    expect(statements).toMatch(/"OutputName":"[^"]*Trainer[^"]*Arn/);
    // The inference role is not widened by the BYO setting.
    const inference = Object.entries(policies).find(([id]) => id.startsWith('InferenceExecutionRole'));
    expect(JSON.stringify(inference?.[1])).not.toContain('Repositories');
  });
});
