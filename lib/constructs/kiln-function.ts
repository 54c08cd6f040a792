import { join } from 'node:path';
import { Duration, IgnoreMode, RemovalPolicy, Size, Validations } from 'aws-cdk-lib';
import { Platform } from 'aws-cdk-lib/aws-ecr-assets';
import type * as events from 'aws-cdk-lib/aws-events';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as nodejs from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct, type IConstruct } from 'constructs';
import { ValidationError } from '../core/errors.ts';
import { DOCKER_CONTEXT_EXCLUDES, REPO_ROOT } from './paths.ts';
import { assertIntegerInRange, assertMatches } from './validate.ts';

/** `functions/<concern>/<name>.<export>` — the handler's source module (no extension) and export. */
const HANDLER_REF = /^functions\/[a-z0-9-]+(\/[a-z0-9-]+)*\.[A-Za-z_$][A-Za-z0-9_$]*$/;

/** The Dockerfile shared by every container-image function. */
export const FUNCTIONS_DOCKERFILE = 'functions/Dockerfile';

/** Settings every Kiln handler shares, whatever its packaging. */
export interface KilnHandlerProps {
  /**
   * Handler reference relative to the repo root, e.g. `functions/etl/shard.handler`. It becomes
   * `KILN_HANDLER`, which the local runtime uses to load the same module.
   */
  readonly handler: string;
  /** The lake; `KILN_LAKE` is set to `s3://<bucket>`. Grants are the caller's job. */
  readonly lake: s3.IBucket;
  /** The platform bus; `KILN_EVENT_BUS` is set to its name. Grants are the caller's job. */
  readonly bus: events.IEventBus;
  /** Powertools service name. @default 'kiln' */
  readonly serviceName?: string;
  /** Extra environment variables. @default - none */
  readonly environment?: Readonly<Record<string, string>>;
  /** Function description. @default - the handler reference */
  readonly description?: string;
  /** Log retention. @default logs.RetentionDays.ONE_MONTH */
  readonly logRetention?: logs.RetentionDays;
  /** Key encrypting the function's log group. @default - CloudWatch Logs default encryption */
  readonly logEncryptionKey?: kms.IKey;
}

/**
 * What pipelines and the stack need from a handler, whichever way it is packaged; switching a handler
 * between {@link KilnNodeFunction} (zip) and {@link KilnContainerFunction} (image) changes nothing else.
 */
export interface KilnHandler extends IConstruct, iam.IGrantable {
  /** The Lambda function. */
  readonly function: lambda.Function;
  /** The function's execution role. */
  readonly role: iam.Role;
  /** The function's log group. */
  readonly logGroup: logs.LogGroup;
  /** The handler reference (`KILN_HANDLER`). */
  readonly kilnHandler: string;
}

/** Properties of {@link KilnNodeFunction}. */
export interface KilnNodeFunctionProps extends KilnHandlerProps {
  /** Memory in MiB (128–10240). @default 512 */
  readonly memorySize?: number;
  /** Timeout (at most 15 minutes). @default Duration.seconds(30) */
  readonly timeout?: Duration;
}

/** Properties of {@link KilnContainerFunction}. */
export interface KilnContainerFunctionProps extends KilnHandlerProps {
  /** Memory in MiB; DuckDB and ONNX Runtime want room (3008–10240). @default 3008 */
  readonly memorySize?: number;
  /** Timeout (at most 15 minutes). @default Duration.minutes(15) */
  readonly timeout?: Duration;
  /** /tmp size in MiB, where DuckDB spills (512–10240). @default 4096 */
  readonly ephemeralStorageMiB?: number;
}

interface ParsedHandler {
  readonly modulePath: string;
  readonly exportName: string;
}

function parseHandler(handler: string): ParsedHandler {
  assertMatches('handler', handler, HANDLER_REF, "'functions/<dir>/<module>.<export>'");
  const dot = handler.lastIndexOf('.');
  return { modulePath: handler.slice(0, dot), exportName: handler.slice(dot + 1) };
}

function assertTimeout(timeout: Duration): void {
  if (timeout.toSeconds() < 1 || timeout.toSeconds() > 900) {
    throw new ValidationError(`timeout must be between 1 and 900 seconds, got ${timeout.toSeconds()}`);
  }
}

function kilnEnvironment(props: KilnHandlerProps): Record<string, string> {
  return {
    KILN_LAKE: `s3://${props.lake.bucketName}`,
    KILN_EVENT_BUS: props.bus.eventBusName,
    KILN_HANDLER: props.handler,
    POWERTOOLS_SERVICE_NAME: props.serviceName ?? 'kiln',
    NODE_OPTIONS: '--enable-source-maps',
    ...props.environment,
  };
}

/**
 * Role for a handler: CloudWatch Logs access to its own log group only, instead of the
 * AWSLambdaBasicExecutionRole managed policy (logs:* on every group).
 */
function handlerLogGroup(scope: Construct, props: KilnHandlerProps): logs.LogGroup {
  return new logs.LogGroup(scope, 'Logs', {
    retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
    encryptionKey: props.logEncryptionKey,
    removalPolicy: RemovalPolicy.DESTROY,
  });
}

function handlerRole(scope: Construct, logGroup: logs.ILogGroup, description: string): iam.Role {
  const role = new iam.Role(scope, 'Role', {
    assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
    description,
  });
  logGroup.grantWrite(role);
  return role;
}

function acknowledgeTracing(scope: Construct): void {
  Validations.of(scope).acknowledge({
    id: 'AwsSolutions-IAM5[Resource::*]',
    reason:
      'X-Ray PutTraceSegments/PutTelemetryRecords (active tracing) and ECR GetAuthorizationToken do not support resource-level permissions.',
  });
}

/**
 * A light Kiln handler: a Node.js 22 arm64 Lambda bundled by esbuild from `functions/**.ts`, with
 * active tracing, a retained log group and the standard `KILN_*` environment. Only for handlers whose
 * import graph has no native module (DuckDB, ONNX Runtime): esbuild cannot bundle `.node` files and the
 * zip limit rules out shipping them, so synthesis fails loudly if one sneaks in.
 */
export class KilnNodeFunction extends Construct implements KilnHandler {
  /** The Lambda function. */
  public readonly function: nodejs.NodejsFunction;
  /** The function's execution role. */
  public readonly role: iam.Role;
  /** The function's log group. */
  public readonly logGroup: logs.LogGroup;
  /** The handler reference (`KILN_HANDLER`). */
  public readonly kilnHandler: string;
  /** Principal to grant to (the execution role). */
  public readonly grantPrincipal: iam.IPrincipal;

  constructor(scope: Construct, id: string, props: KilnNodeFunctionProps) {
    super(scope, id);
    const { modulePath, exportName } = parseHandler(props.handler);
    const memorySize = props.memorySize ?? 512;
    assertIntegerInRange('memorySize', memorySize, 128, 10240);
    const timeout = props.timeout ?? Duration.seconds(30);
    assertTimeout(timeout);
    this.kilnHandler = props.handler;
    this.logGroup = handlerLogGroup(this, props);
    this.role = handlerRole(this, this.logGroup, `Execution role of ${props.handler}`);
    this.grantPrincipal = this.role;
    this.function = new nodejs.NodejsFunction(this, 'Function', {
      entry: join(REPO_ROOT, `${modulePath}.ts`),
      handler: exportName,
      description: props.description ?? props.handler,
      runtime: lambda.Runtime.NODEJS_22_X,
      architecture: lambda.Architecture.ARM_64,
      tracing: lambda.Tracing.ACTIVE,
      memorySize,
      timeout,
      role: this.role,
      logGroup: this.logGroup,
      loggingFormat: lambda.LoggingFormat.JSON,
      projectRoot: REPO_ROOT,
      depsLockFilePath: join(REPO_ROOT, 'package-lock.json'),
      environment: kilnEnvironment(props),
      bundling: {
        format: nodejs.OutputFormat.ESM,
        target: 'node22',
        mainFields: ['module', 'main'],
        minify: true,
        sourceMap: true,
        // The Node.js 22 runtime ships AWS SDK v3; bundling it would only grow cold starts.
        externalModules: ['@aws-sdk/*'],
        // CommonJS dependencies bundled into ESM still call require() for Node built-ins.
        banner:
          "import { createRequire as __kilnCreateRequire } from 'node:module';const require = __kilnCreateRequire(import.meta.url);",
      },
    });
    acknowledgeTracing(this);
    Validations.of(this).acknowledge({
      id: 'AwsSolutions-L1',
      reason:
        'Kiln pins Node.js 22 on purpose: the container-image functions (public.ecr.aws/lambda/nodejs:22) and the local runtime run the same major, so all handlers move to a new major together.',
    });
  }
}

/**
 * A heavy Kiln handler — any handler whose import graph reaches DuckDB or ONNX Runtime: a container-image
 * Lambda built from `functions/Dockerfile` (too big for a 250 MB zip), with the image's CMD pointing at the
 * handler compiled to `dist/`.
 */
export class KilnContainerFunction extends Construct implements KilnHandler {
  /** The Lambda function. */
  public readonly function: lambda.DockerImageFunction;
  /** The function's execution role. */
  public readonly role: iam.Role;
  /** The function's log group. */
  public readonly logGroup: logs.LogGroup;
  /** The handler reference (`KILN_HANDLER`). */
  public readonly kilnHandler: string;
  /** Principal to grant to (the execution role). */
  public readonly grantPrincipal: iam.IPrincipal;

  constructor(scope: Construct, id: string, props: KilnContainerFunctionProps) {
    super(scope, id);
    const { modulePath, exportName } = parseHandler(props.handler);
    const memorySize = props.memorySize ?? 3008;
    assertIntegerInRange('memorySize', memorySize, 3008, 10240);
    const timeout = props.timeout ?? Duration.minutes(15);
    assertTimeout(timeout);
    const ephemeral = props.ephemeralStorageMiB ?? 4096;
    assertIntegerInRange('ephemeralStorageMiB', ephemeral, 512, 10240);
    this.kilnHandler = props.handler;
    this.logGroup = handlerLogGroup(this, props);
    this.role = handlerRole(this, this.logGroup, `Execution role of ${props.handler}`);
    this.grantPrincipal = this.role;
    this.function = new lambda.DockerImageFunction(this, 'Function', {
      // Every heavy function shares one image (same context, Dockerfile and platform => same asset
      // hash); only the CMD differs, and CMD is Lambda image config, not part of the build.
      code: lambda.DockerImageCode.fromImageAsset(REPO_ROOT, {
        file: FUNCTIONS_DOCKERFILE,
        cmd: [`dist/${modulePath}.${exportName}`],
        // x86_64: build hosts are usually x86 and cross-building arm64 images needs emulation.
        platform: Platform.LINUX_AMD64,
        ignoreMode: IgnoreMode.DOCKER,
        exclude: [...DOCKER_CONTEXT_EXCLUDES],
      }),
      description: props.description ?? props.handler,
      architecture: lambda.Architecture.X86_64,
      tracing: lambda.Tracing.ACTIVE,
      memorySize,
      timeout,
      ephemeralStorageSize: Size.mebibytes(ephemeral),
      role: this.role,
      logGroup: this.logGroup,
      loggingFormat: lambda.LoggingFormat.JSON,
      environment: kilnEnvironment(props),
    });
    acknowledgeTracing(this);
  }
}
