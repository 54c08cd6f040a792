import { describe, expect, it } from 'vitest';
import { OnnxModel } from '../../lib/ml/onnx-model.ts';
import { LambdaModelHost } from '../../lib/serving/lambda-host.ts';
import { mixedFixture, sourceOf } from '../support/model-fixtures.ts';

const event = (body: string, contentType = 'application/json', model?: string) => ({
  body,
  headers: { 'Content-Type': contentType },
  isBase64Encoded: false,
  queryStringParameters: model ? { model } : null,
});

describe('LambdaModelHost (serverless option)', () => {
  it('answers like /invocations, with the same predictions as ONNX Runtime on the transformed rows', async () => {
    const fixture = mixedFixture('multiclass');
    const host = new LambdaModelHost(sourceOf(fixture));
    const rows = fixture.rows.slice(0, 5);
    const result = await host.handle(event(JSON.stringify({ instances: rows })));
    expect(result.statusCode).toBe(200);
    const { predictions } = JSON.parse(result.body) as { predictions: Array<{ label: string }> };
    const direct = await OnnxModel.load(fixture.bundle.onnx);
    const { applyTransform, coerceRowValues } = await import('../../lib/core/transform.ts');
    const { features, nRows } = applyTransform(
      fixture.transform,
      rows.map((row) => coerceRowValues(fixture.transform, row)),
    );
    const output = await direct.run(features, nRows);
    expect(predictions.map((p) => p.label)).toEqual(
      Array.from(output.labels ?? [], (i) => direct.classes[i]),
    );
    await direct.release();
  });

  it('turns client mistakes into 4xx JSON errors and picks the model by ?model=', async () => {
    const a = mixedFixture('regression', { name: 'a' });
    const b = mixedFixture('multiclass', { name: 'b' });
    const host = new LambdaModelHost(sourceOf(a, b));
    expect((await host.handle(event('{"instances":[]}', 'application/json', 'a'))).statusCode).toBe(400);
    expect((await host.handle(event('{"instances":[{"x":1}]}'))).statusCode).toBe(400); // which model?
    expect((await host.handle(event('{"instances":[{"x":1}]}', 'application/json', 'zzz'))).statusCode).toBe(
      404,
    );
    expect((await host.handle(event('x', 'text/plain', 'a'))).statusCode).toBe(415);
    expect((await host.handle(event('{bad', 'application/json', 'a'))).statusCode).toBe(400);
    const ok = await host.handle(
      event(JSON.stringify({ instances: a.rows.slice(0, 2) }), 'application/json', 'a'),
    );
    expect(ok.statusCode).toBe(200);
    expect(ok.headers?.['x-kiln-model']).toBe('a');
  });
});
