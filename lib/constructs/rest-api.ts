import { Validations } from 'aws-cdk-lib';
import * as apigateway from 'aws-cdk-lib/aws-apigateway';
import type * as cognito from 'aws-cdk-lib/aws-cognito';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as wafv2 from 'aws-cdk-lib/aws-wafv2';
import { Construct, type IDependable } from 'constructs';
import { ValidationError } from '../core/errors.ts';
import type { LogEncryptionKey } from './log-key.ts';
import { assertIntegerInRange, assertMatches, assertOneOf } from './validate.ts';

/** How callers authenticate to a Kiln REST API. */
export type ApiAuthMode = 'iam' | 'apiKey' | 'cognito';

/** Authentication and throttling settings shared by Kiln's REST APIs. */
export interface KilnApiAccessProps {
  /**
   * `iam`: SigV4-signed requests (`AWS_IAM`); `apiKey`: an `x-api-key` header checked against a usage plan;
   * `cognito`: a Cognito user-pool JWT in `Authorization`.
   * @default 'iam'
   */
  readonly authMode?: ApiAuthMode;
  /** User pool whose tokens are accepted; required when `authMode` is `cognito`. @default - none */
  readonly userPool?: cognito.IUserPool;
  /** Steady-state requests per second for the stage (1–10000). @default 50 */
  readonly throttlingRateLimit?: number;
  /** Burst requests for the stage (1–5000). @default 100 */
  readonly throttlingBurstLimit?: number;
  /**
   * WAFv2 web ACL (REGIONAL scope) to associate with the stage. WAFv2 has no L2 construct to pass, hence
   * the ARN.
   * @default - no web ACL
   */
  readonly webAclArn?: string;
}

/** Properties of {@link KilnRestApi}. */
export interface KilnRestApiProps extends KilnApiAccessProps {
  /** API description. */
  readonly description: string;
  /** Key for the access-log group. */
  readonly logEncryptionKey: LogEncryptionKey;
  /** Access-log retention. @default logs.RetentionDays.ONE_MONTH */
  readonly logRetention?: logs.RetentionDays;
  /**
   * Resource that configures the account's API Gateway CloudWatch role (stage execution logging fails
   * without it); the stage is deployed after it.
   * @default - the account is assumed to be configured already
   */
  readonly accountDependency?: IDependable;
}

/**
 * A regional REST API with Kiln's defaults: auth on every method (IAM unless told otherwise), request
 * validation, stage throttling, JSON access logs, execution logs, X-Ray, HTTPS only (API Gateway serves
 * TLS 1.2+ and no plain HTTP).
 */
export class KilnRestApi extends Construct {
  /** The REST API. */
  public readonly api: apigateway.RestApi;
  /** Access-log group of the stage. */
  public readonly accessLogGroup: logs.LogGroup;
  /** Validator checking bodies against models and required parameters. */
  public readonly requestValidator: apigateway.RequestValidator;
  /** Method options applying the configured auth (spread into `addMethod` options). */
  public readonly authMethodOptions: apigateway.MethodOptions;
  /** The API key (only in `apiKey` mode). */
  public readonly apiKey?: apigateway.IApiKey;
  /** Effective auth mode. */
  public readonly authMode: ApiAuthMode;

  constructor(scope: Construct, id: string, props: KilnRestApiProps) {
    super(scope, id);
    const authMode = props.authMode ?? 'iam';
    assertOneOf('authMode', authMode, ['iam', 'apiKey', 'cognito']);
    const rate = props.throttlingRateLimit ?? 50;
    const burst = props.throttlingBurstLimit ?? 100;
    assertIntegerInRange('throttlingRateLimit', rate, 1, 10000);
    assertIntegerInRange('throttlingBurstLimit', burst, 1, 5000);
    assertMatches(
      'webAclArn',
      props.webAclArn,
      /^arn:aws[a-z-]*:wafv2:[a-z0-9-]+:\d{12}:regional\/webacl\/.+$/,
      'a REGIONAL WAFv2 web ACL ARN',
    );
    if (authMode === 'cognito' && !props.userPool) {
      throw new ValidationError("authMode 'cognito' needs a userPool, got userPool undefined");
    }
    this.authMode = authMode;

    this.accessLogGroup = props.logEncryptionKey.logGroup(
      this,
      'AccessLogs',
      props.logRetention ?? logs.RetentionDays.ONE_MONTH,
    );
    this.api = new apigateway.RestApi(this, 'Api', {
      description: props.description,
      endpointConfiguration: { types: [apigateway.EndpointType.REGIONAL] },
      cloudWatchRole: false,
      deployOptions: {
        stageName: 'v1',
        tracingEnabled: true,
        metricsEnabled: true,
        loggingLevel: apigateway.MethodLoggingLevel.ERROR,
        // Request/response bodies would copy model inputs into logs.
        dataTraceEnabled: false,
        throttlingRateLimit: rate,
        throttlingBurstLimit: burst,
        accessLogDestination: new apigateway.LogGroupLogDestination(this.accessLogGroup),
        accessLogFormat: apigateway.AccessLogFormat.jsonWithStandardFields(),
      },
    });
    if (props.accountDependency) this.api.deploymentStage.node.addDependency(props.accountDependency);
    this.requestValidator = this.api.addRequestValidator('Validator', {
      validateRequestBody: true,
      validateRequestParameters: true,
    });

    if (authMode === 'iam') {
      this.authMethodOptions = { authorizationType: apigateway.AuthorizationType.IAM };
    } else if (authMode === 'cognito' && props.userPool) {
      const authorizer = new apigateway.CognitoUserPoolsAuthorizer(this, 'Authorizer', {
        cognitoUserPools: [props.userPool],
      });
      this.authMethodOptions = { authorizationType: apigateway.AuthorizationType.COGNITO, authorizer };
    } else {
      this.authMethodOptions = { authorizationType: apigateway.AuthorizationType.NONE, apiKeyRequired: true };
      const plan = this.api.addUsagePlan('UsagePlan', {
        throttle: { rateLimit: rate, burstLimit: burst },
        apiStages: [{ api: this.api, stage: this.api.deploymentStage }],
      });
      this.apiKey = this.api.addApiKey('ApiKey');
      plan.addApiKey(this.apiKey);
      Validations.of(this).acknowledge({
        id: 'AwsSolutions-APIG4',
        reason:
          "authMode 'apiKey' was chosen explicitly: every method requires an API key via the usage plan.",
      });
    }

    if (props.webAclArn) {
      new wafv2.CfnWebACLAssociation(this, 'WebAcl', {
        resourceArn: this.api.deploymentStage.stageArn,
        webAclArn: props.webAclArn,
      });
    } else {
      Validations.of(this).acknowledge({
        id: 'AwsSolutions-APIG3',
        reason:
          'No web ACL given (webAclArn): every method requires SigV4, a Cognito token or an API key, and the stage is throttled; WAF is an account-level choice.',
      });
    }
    if (authMode !== 'cognito') {
      Validations.of(this).acknowledge({
        id: 'AwsSolutions-COG4',
        reason: `Methods authenticate with ${authMode === 'iam' ? 'AWS_IAM (SigV4)' : 'an API key'}; Cognito is available through authMode 'cognito'.`,
      });
    }
  }

  /** Method options for a method of this API: the configured auth plus the request validator. */
  public methodOptions(extra: apigateway.MethodOptions = {}): apigateway.MethodOptions {
    return { ...this.authMethodOptions, requestValidator: this.requestValidator, ...extra };
  }
}

/**
 * The account-level API Gateway setting that lets stages write execution logs to CloudWatch. It is one
 * per account and region: deploy it from one stack only.
 */
export class ApiGatewayAccount extends Construct {
  /** The `AWS::ApiGateway::Account` resource; stages should depend on it. */
  public readonly account: apigateway.CfnAccount;
  /** The role API Gateway uses to push logs. */
  public readonly role: iam.Role;

  constructor(scope: Construct, id: string) {
    super(scope, id);
    this.role = new iam.Role(this, 'CloudWatchRole', {
      assumedBy: new iam.ServicePrincipal('apigateway.amazonaws.com'),
      managedPolicies: [
        iam.ManagedPolicy.fromAwsManagedPolicyName('service-role/AmazonAPIGatewayPushToCloudWatchLogs'),
      ],
    });
    this.account = new apigateway.CfnAccount(this, 'Account', { cloudWatchRoleArn: this.role.roleArn });
    Validations.of(this).acknowledge({
      id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]',
      reason:
        'The AWS-managed service-role policy is the documented way to let API Gateway write stage logs to any API log group in the account.',
    });
  }
}
