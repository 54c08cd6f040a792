import type { InvokeEndpointCommand, SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import { describe, expect, it } from 'vitest';
import { MAX_BODY_BYTES, proxyToEndpoint } from '../../lib/serving/endpoint-proxy.ts';

// SageMaker runtime cannot run here: a fake client that answers with InvokeEndpoint's documented shapes.
function fakeClient(answer: (command: InvokeEndpointCommand) => unknown) {
  const calls: InvokeEndpointCommand[] = [];
  const client = {
    send: async (command: InvokeEndpointCommand) => {
      calls.push(command);
      const result = answer(command);
      if (result instanceof Error) throw result;
      return result;
    },
  } as unknown as SageMakerRuntimeClient;
  return { client, calls };
}

const event = (body: string | null, contentType = 'application/json') => ({
  body,
  headers: { 'Content-Type': contentType },
  isBase64Encoded: false,
  queryStringParameters: { model: 'churn' },
});

describe('proxyToEndpoint', () => {
  it('passes the body, content type and target model to InvokeEndpoint and returns its body', async () => {
    const { client, calls } = fakeClient(() => ({
      ContentType: 'application/json',
      Body: new TextEncoder().encode('{"predictions":[{"value":1}]}'),
    }));
    const result = await proxyToEndpoint(client, 'kiln-endpoint', event('{"instances":[[1]]}'));
    expect(result.statusCode).toBe(200);
    expect(JSON.parse(result.body)).toEqual({ predictions: [{ value: 1 }] });
    expect(calls[0]?.input).toMatchObject({
      EndpointName: 'kiln-endpoint',
      ContentType: 'application/json',
      TargetModel: 'churn',
    });
  });

  it('keeps the model server 4xx (ModelError) as a 4xx with its message', async () => {
    const error = Object.assign(new Error('Received client error (400)'), {
      name: 'ModelError',
      OriginalStatusCode: 400,
      OriginalMessage: '{"error":"instance 0: column x is not a number"}',
    });
    const { client } = fakeClient(() => error);
    const result = await proxyToEndpoint(client, 'e', event('{"instances":[["a"]]}'));
    expect(result.statusCode).toBe(400);
    expect(result.body).toContain('column x');
  });

  it('refuses unsupported media, empty and oversized bodies without calling the endpoint', async () => {
    const { client, calls } = fakeClient(() => ({}));
    expect((await proxyToEndpoint(client, 'e', event('x', 'text/plain'))).statusCode).toBe(415);
    expect((await proxyToEndpoint(client, 'e', event(null))).statusCode).toBe(400);
    expect((await proxyToEndpoint(client, 'e', event('x'.repeat(MAX_BODY_BYTES + 1)))).statusCode).toBe(413);
    expect(calls).toHaveLength(0);
  });

  it('rethrows unexpected failures for the handler to turn into a bare 502', async () => {
    const { client } = fakeClient(() => Object.assign(new Error('boom'), { name: 'InternalFailure' }));
    await expect(proxyToEndpoint(client, 'e', event('{}'))).rejects.toThrow('boom');
  });
});
