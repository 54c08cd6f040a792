import * as apigateway from 'aws-cdk-lib/aws-apigateway';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as logs from 'aws-cdk-lib/aws-logs';
import { Construct, type IDependable } from 'constructs';
import type { LogEncryptionKey } from './log-key.ts';
import { type KilnApiAccessProps, KilnRestApi } from './rest-api.ts';

/** Properties of {@link InferenceApi}. */
export interface InferenceApiProps extends KilnApiAccessProps {
  /** Function answering predictions: the endpoint proxy, or the Lambda-hosted model. */
  readonly backend: lambda.IFunction;
  /** Key for the access-log group. */
  readonly logEncryptionKey: LogEncryptionKey;
  /** Log retention. @default logs.RetentionDays.ONE_MONTH */
  readonly logRetention?: logs.RetentionDays;
  /** See {@link KilnRestApiProps.accountDependency}. @default - none */
  readonly accountDependency?: IDependable;
}

/**
 * Online predictions over HTTPS: `POST /predict` (default model) and `POST /models/{model}/predict`,
 * both with a JSON body `{"instances": [...]}` validated by API Gateway before the backend runs.
 *
 * Body size: API Gateway accepts up to 10 MB, but the Lambda backend's synchronous invoke payload limit
 * is 6 MB (request and response), so 6 MB is the effective limit; larger jobs belong in batch scoring.
 */
export class InferenceApi extends Construct {
  /** The REST API and its stage. */
  public readonly restApi: KilnRestApi;
  /** The request model (`instances` array required). */
  public readonly requestModel: apigateway.Model;

  constructor(scope: Construct, id: string, props: InferenceApiProps) {
    super(scope, id);
    this.restApi = new KilnRestApi(this, 'Api', { ...props, description: 'Kiln online inference' });
    const api = this.restApi.api;
    this.requestModel = api.addModel('PredictRequest', {
      contentType: 'application/json',
      description: 'Prediction request: one feature object or array per instance',
      schema: {
        schema: apigateway.JsonSchemaVersion.DRAFT4,
        title: 'PredictRequest',
        type: apigateway.JsonSchemaType.OBJECT,
        required: ['instances'],
        properties: {
          instances: { type: apigateway.JsonSchemaType.ARRAY, minItems: 1 },
          parameters: { type: apigateway.JsonSchemaType.OBJECT },
        },
      },
    });
    const integration = new apigateway.LambdaIntegration(props.backend, { allowTestInvoke: false });
    const requestModels = { 'application/json': this.requestModel };
    api.root
      .addResource('predict')
      .addMethod('POST', integration, this.restApi.methodOptions({ requestModels }));
    api.root
      .addResource('models')
      .addResource('{model}')
      .addResource('predict')
      .addMethod(
        'POST',
        integration,
        this.restApi.methodOptions({
          requestModels,
          requestParameters: { 'method.request.path.model': true },
        }),
      );
  }
}
