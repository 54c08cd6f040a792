import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { App, type AppProps, Validations } from 'aws-cdk-lib';
import * as cxapi from 'aws-cdk-lib/cx-api';
import { AwsSolutionsChecks } from 'cdk-nag';
import { KilnPlatformStack, type KilnPlatformStackProps } from './platform-stack.ts';

/** Construct id (and CloudFormation stack name) of the platform stack. */
export const PLATFORM_STACK_ID = 'KilnPlatform';

/**
 * Feature flags the app runs with: the set `cdk init` writes for a new project on this aws-cdk-lib version
 * (e.g. bucket-policy access logging, no implicit API Gateway account role). Values in cdk.json or on the
 * CLI take precedence.
 */
export const PLATFORM_FEATURE_FLAGS: Readonly<Record<string, unknown>> = cxapi.CURRENTLY_RECOMMENDED_FLAGS;

/**
 * Stack props from `-c kiln:<prop>=<value>` context, e.g. `npx cdk synth -c kiln:servingMode=lambda`.
 * Values are validated by the stack.
 */
export function stackPropsFromContext(app: App): KilnPlatformStackProps {
  const read = (name: string): string | undefined => {
    const value: unknown = app.node.tryGetContext(`kiln:${name}`);
    return value === undefined ? undefined : String(value);
  };
  return {
    servingMode: read('servingMode') as KilnPlatformStackProps['servingMode'],
    inferenceInstanceType: read('inferenceInstanceType'),
    trainingInstanceType: read('trainingInstanceType'),
    modelDataKey: read('modelDataKey'),
  };
}

/** Options of {@link createPlatformApp}. */
export interface PlatformAppOptions {
  /** Run esbuild for the Node.js functions. @default true */
  readonly bundling?: boolean;
  /** Attach cdk-nag's AwsSolutions checks as a validation plugin. @default false */
  readonly nag?: boolean;
  /** Cloud assembly directory. @default - CDK's default (`cdk.out` or the CLI's choice) */
  readonly outdir?: string;
  /** Skip copying asset sources into the assembly (hashes are still computed). @default false */
  readonly skipAssetStaging?: boolean;
  /**
   * Run CDK's built-in CloudFormation template validation (cfn-lint style rules, seconds of WASM).
   * @default true
   */
  readonly cloudFormationValidation?: boolean;
  /** Props of the platform stack. @default {} */
  readonly stackProps?: KilnPlatformStackProps;
}

/**
 * A CDK app with Kiln's feature flags. CDK v1 flags that v2 removed (e.g.
 * `@aws-cdk/core:enableStackNameDuplicates`) make v2 throw as soon as a stack reads them, although v2
 * always behaves as if they were `true`; a `true` value is therefore dropped, which changes nothing else.
 */
export function platformApp(props: AppProps = {}): App {
  const app = new App({ ...props, context: { ...PLATFORM_FEATURE_FLAGS, ...props.context } });
  for (const flag of cxapi.CURRENT_VERSION_EXPIRED_FLAGS) {
    if (app.node.tryGetContext(flag) === true) app.node.setContext(flag, undefined);
  }
  return app;
}

/** The CDK app with the platform stack, configured the same way for the CLI, tests and the local runtime. */
export function createPlatformApp(options: PlatformAppOptions = {}): { app: App; stack: KilnPlatformStack } {
  const context: Record<string, unknown> = {};
  // An empty list means "bundle no stack": NodejsFunction skips esbuild but still needs its entry file.
  if (options.bundling === false) context[cxapi.BUNDLING_STACKS] = [];
  if (options.skipAssetStaging) context[cxapi.DISABLE_ASSET_STAGING_CONTEXT] = true;
  const validation = options.cloudFormationValidation ?? true;
  const app = platformApp({
    context,
    outdir: options.outdir,
    builtinCloudFormationValidation: validation,
    treeMetadata: validation,
  });
  const stack = new KilnPlatformStack(
    app,
    PLATFORM_STACK_ID,
    options.stackProps ?? stackPropsFromContext(app),
  );
  if (options.nag) Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  return { app, stack };
}

/**
 * Synthesizes the platform stack in-process and returns its CloudFormation template (the local runtime
 * reads the state-machine definitions from it). No Docker, no esbuild unless `bundling`, no asset copies.
 */
export function synthesizePlatformTemplate(
  opts: { bundling?: boolean; stackProps?: KilnPlatformStackProps } = {},
): Record<string, unknown> {
  const outdir = mkdtempSync(join(tmpdir(), 'kiln-synth-'));
  try {
    const { app, stack } = createPlatformApp({
      bundling: opts.bundling ?? false,
      outdir,
      skipAssetStaging: !opts.bundling,
      // The caller wants the definitions fast; template validation runs in `cdk synth` and the CDK tests.
      cloudFormationValidation: false,
      stackProps: opts.stackProps,
    });
    const template: unknown = app.synth().getStackArtifact(stack.artifactId).template;
    return template as Record<string, unknown>;
  } finally {
    rmSync(outdir, { recursive: true, force: true });
  }
}
