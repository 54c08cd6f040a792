// CDK app entry (cdk.json: `npx tsx bin/app.ts`). Environment-agnostic: synthesizes without AWS credentials.
// Stack props can come from context, e.g. `npx cdk synth -c kiln:servingMode=lambda`.
import { Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { KilnPlatformStack } from '../lib/stacks/platform-stack.ts';
import { PLATFORM_STACK_ID, platformApp, stackPropsFromContext } from '../lib/stacks/synth.ts';

const app = platformApp();
new KilnPlatformStack(app, PLATFORM_STACK_ID, stackPropsFromContext(app));
// cdk-nag 3 is a validation plugin: an unacknowledged AwsSolutions finding fails `cdk synth`.
Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
