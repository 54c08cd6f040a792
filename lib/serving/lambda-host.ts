import type { APIGatewayProxyEvent, APIGatewayProxyResult } from 'aws-lambda';
import { ValidationError } from '../core/errors.ts';
import { applyTransformToInputs, coerceRowInputs, type FittedTransform } from '../core/transform.ts';
import { OnnxModel } from '../ml/onnx-model.ts';
import { httpStatusOf, PayloadTooLargeError } from './errors.ts';
import type { ModelSource } from './model-source.ts';
import { parseInvocationBody, predictionsJson, predictionsOf } from './sagemaker.ts';

/** API Gateway's payload limit is 10 MB; SageMaker's is 6 MB. The Lambda host keeps the SageMaker limit. */
const MAX_BODY_BYTES = 6 * 1024 * 1024;
const MAX_ROWS = 10_000;

interface Loaded {
  version: string;
  model: OnnxModel;
  transform: FittedTransform;
  checkedAt: number;
}

/**
 * The serverless option: one small CPU model served straight from a Lambda function (scale to zero), with the
 * same body parsing, transform and ONNX Runtime as the server. A warm function keeps the model loaded and
 * checks the registry's current version at most every `recheckMs`, so an alias move reaches it without a deploy.
 */
export class LambdaModelHost {
  private readonly loaded = new Map<string, Loaded>();

  constructor(
    private readonly source: ModelSource,
    private readonly recheckMs = 30_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** Handles one API Gateway proxy event: `/invocations` semantics, `?model=` picks the model. */
  async handle(
    event: Pick<APIGatewayProxyEvent, 'body' | 'headers' | 'isBase64Encoded' | 'queryStringParameters'>,
  ) {
    try {
      const headers = Object.fromEntries(
        Object.entries(event.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]),
      );
      const body = Buffer.from(event.body ?? '', event.isBase64Encoded ? 'base64' : 'utf8');
      if (body.length > MAX_BODY_BYTES) {
        throw new PayloadTooLargeError(`body is ${body.length} bytes; the limit is ${MAX_BODY_BYTES}`);
      }
      const name = event.queryStringParameters?.model ?? (await this.onlyModel());
      const { model, transform, version } = await this.model(name);
      const rows = parseInvocationBody(
        body,
        headers['content-type'],
        transform.inputs,
        transform.target,
        MAX_ROWS,
      );
      const { features, nRows } = applyTransformToInputs(
        transform,
        rows.map((row) => coerceRowInputs(transform, row)),
      );
      const output = await model.run(features, nRows);
      return response(200, predictionsJson(predictionsOf(output, model.classes)), {
        'x-kiln-model': name,
        'x-kiln-model-version': version,
      });
    } catch (error) {
      const { status, expose } = httpStatusOf(error);
      const message = expose && error instanceof Error ? error.message : 'internal error';
      if (!expose)
        console.error(JSON.stringify({ level: 'error', message: 'invocation failed', error: String(error) }));
      return response(status, JSON.stringify({ error: message }));
    }
  }

  private async onlyModel(): Promise<string> {
    const names = await this.source.list();
    if (names.length !== 1 || !names[0]) {
      throw new ValidationError(`choose a model with ?model=NAME; available: ${names.join(', ') || 'none'}`);
    }
    return names[0];
  }

  private async model(name: string): Promise<Loaded> {
    const cached = this.loaded.get(name);
    if (cached && this.now() - cached.checkedAt < this.recheckMs) return cached;
    const current = await this.source.current(name);
    if (cached && cached.version === current) {
      cached.checkedAt = this.now();
      return cached;
    }
    const bundle = await this.source.load(name, current);
    const loaded: Loaded = {
      version: bundle.version,
      model: await OnnxModel.load(bundle.onnx, { provider: 'cpu' }),
      transform: bundle.transform,
      checkedAt: this.now(),
    };
    this.loaded.set(name, loaded);
    if (cached) await cached.model.release();
    return loaded;
  }
}

function response(
  statusCode: number,
  body: string,
  extra: Record<string, string> = {},
): APIGatewayProxyResult {
  return { statusCode, headers: { 'content-type': 'application/json', ...extra }, body };
}
