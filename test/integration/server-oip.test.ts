import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  call,
  directPredictions,
  type ModelFixture,
  mixedFixture,
  postJson,
  type RunningServer,
  sourceOf,
  spambaseFixture,
  startServer,
} from '../support/model-fixtures.ts';

let spam: ModelFixture;
let price: ModelFixture;
let tier: ModelFixture;
let server: RunningServer;

interface InferResponse {
  model_name: string;
  model_version?: string;
  id: string;
  outputs: Array<{ name: string; shape: number[]; datatype: string; data: unknown[] }>;
}

/** One V2 input tensor per column, as the protocol asks for tabular data. */
function tensors(fixture: ModelFixture, rows: Array<Record<string, unknown>>) {
  return fixture.transform.inputs.map((column) => ({
    name: column.name,
    datatype: { number: 'FP64', integer: 'INT64', boolean: 'BOOL', string: 'BYTES', timestamp: 'BYTES' }[
      column.type
    ],
    shape: [rows.length],
    data: rows.map((r) => r[column.name] ?? null),
  }));
}

beforeAll(async () => {
  spam = spambaseFixture({ limit: 1500 });
  price = mixedFixture('regression');
  tier = mixedFixture('multiclass', { version: '7' });
  server = await startServer({ source: sourceOf(spam, price, tier) });
});

afterAll(async () => {
  await server?.close();
});

describe('health and metadata', () => {
  it('GET /v2 describes the server', async () => {
    const reply = await call(`${server.url}/v2`);
    expect(reply.status).toBe(200);
    expect(reply.json).toEqual({ name: 'kiln-inference', version: expect.any(String), extensions: [] });
  });

  it('GET /v2/health/live and /v2/health/ready are 200', async () => {
    expect((await call(`${server.url}/v2/health/live`)).json).toEqual({ live: true });
    const ready = await call(`${server.url}/v2/health/ready`);
    expect(ready.status).toBe(200);
    expect(ready.json).toEqual({ ready: true });
  });

  it('model ready answers for the name, with or without the loaded version', async () => {
    expect((await call(`${server.url}/v2/models/tier/ready`)).json).toEqual({ name: 'tier', ready: true });
    const versioned = await call(`${server.url}/v2/models/tier/versions/7/ready`);
    expect(versioned.status).toBe(200);
    expect(versioned.json).toEqual({ name: 'tier', ready: true });
  });

  it('model metadata lists raw input columns with datatypes, outputs, versions, platform and provider', async () => {
    const reply = await call(`${server.url}/v2/models/tier`);
    expect(reply.status).toBe(200);
    const meta = reply.json as Record<string, unknown>;
    expect(meta).toMatchObject({
      name: 'tier',
      versions: ['7'],
      platform: 'onnxruntime',
      inputs: [
        { name: 'x', datatype: 'FP64', shape: [-1] },
        { name: 'count', datatype: 'INT64', shape: [-1] },
        { name: 'color', datatype: 'BYTES', shape: [-1] },
        { name: 'flag', datatype: 'BOOL', shape: [-1] },
      ],
      outputs: [
        { name: 'label', datatype: 'BYTES', shape: [-1] },
        { name: 'probabilities', datatype: 'FP32', shape: [-1, 3] },
      ],
      properties: { execution_provider: 'cpu', task: 'multiclass', classes: '["high","low","mid"]' },
    });
    const versioned = await call(`${server.url}/v2/models/tier/versions/7`);
    expect(versioned.json).toEqual(meta);
    const regression = await call(`${server.url}/v2/models/price`);
    expect((regression.json as { outputs: unknown }).outputs).toEqual([
      { name: 'predictions', datatype: 'FP32', shape: [-1] },
    ]);
  });
});

describe('POST /v2/models/{name}[/versions/{v}]/infer', () => {
  it('classifies, echoes the id and matches OnnxModel', async () => {
    const rows = spam.rows.slice(0, 12);
    const reply = await postJson(`${server.url}/v2/models/spam/infer`, {
      id: 'req-42',
      inputs: tensors(spam, rows),
    });
    expect(reply.status).toBe(200);
    const body = reply.json as InferResponse;
    expect(body).toMatchObject({ model_name: 'spam', model_version: '1', id: 'req-42' });
    const direct = await directPredictions(spam, rows);
    expect(body.outputs).toEqual([
      {
        name: 'label',
        shape: [12],
        datatype: 'BYTES',
        data: Array.from(direct.labels ?? [], (k) => spam.trained.classes[k]),
      },
      {
        name: 'probabilities',
        shape: [12, 2],
        datatype: 'FP32',
        data: Array.from(direct.probabilities ?? []),
      },
    ]);
  });

  it('accepts [N, 1] shapes, nested data and the version in the path; answers regression as predictions', async () => {
    const rows = price.rows.slice(0, 3);
    const inputs = tensors(price, rows).map((t) => ({ ...t, shape: [3, 1], data: t.data.map((v) => [v]) }));
    const reply = await postJson(`${server.url}/v2/models/price/versions/1/infer`, { inputs });
    expect(reply.status).toBe(200);
    const direct = await directPredictions(price, rows);
    const body = reply.json as InferResponse;
    expect(body.outputs).toEqual([
      { name: 'predictions', shape: [3], datatype: 'FP32', data: Array.from(direct.values ?? []) },
    ]);
    expect(body.id).toBe(reply.headers.get('x-kiln-request-id'));
  });

  it('returns only the requested outputs', async () => {
    const reply = await postJson(`${server.url}/v2/models/tier/infer`, {
      inputs: tensors(tier, tier.rows.slice(0, 2)),
      outputs: [{ name: 'label' }],
    });
    expect(reply.status).toBe(200);
    expect((reply.json as InferResponse).outputs.map((o) => o.name)).toEqual(['label']);
  });

  it('treats columns left out as missing values', async () => {
    const rows = [{ x: 2.5, count: 4, color: 'green', flag: false }];
    const inputs = tensors(tier, rows).filter((t) => t.name !== 'color');
    const reply = await postJson(`${server.url}/v2/models/tier/infer`, { inputs });
    const direct = await directPredictions(tier, [{ x: 2.5, count: 4, flag: false }]);
    expect(reply.status).toBe(200);
    expect((reply.json as InferResponse).outputs[1]?.data).toEqual(Array.from(direct.probabilities ?? []));
  });
});

describe('V2 errors use {"error": "..."} and the spec status codes', () => {
  const good = () => ({ inputs: tensors(tier, tier.rows.slice(0, 2)) });
  const cases: Array<[string, string, () => unknown, number, RegExp]> = [
    ['unknown model', '/v2/models/nope/infer', good, 404, /nope/],
    ['unknown version', '/v2/models/tier/versions/99/infer', good, 404, /99/],
    ['no inputs', '/v2/models/tier/infer', () => ({ inputs: [] }), 400, /at least one/],
    ['inputs not an array', '/v2/models/tier/infer', () => ({ inputs: 'x' }), 400, /inputs/],
    [
      'unknown input name',
      '/v2/models/tier/infer',
      () => ({ inputs: [{ name: 'zzz', shape: [1], datatype: 'FP64', data: [1] }] }),
      400,
      /unknown input "zzz"/,
    ],
    [
      'wrong datatype for the column',
      '/v2/models/tier/infer',
      () => ({ inputs: [{ name: 'x', shape: [1], datatype: 'BYTES', data: ['1'] }] }),
      400,
      /datatype "BYTES"/,
    ],
    [
      'data that does not match the datatype',
      '/v2/models/tier/infer',
      () => ({ inputs: [{ name: 'count', shape: [2], datatype: 'INT64', data: [1, 2.5] }] }),
      400,
      /not a INT64/,
    ],
    [
      'shape and data length disagree',
      '/v2/models/tier/infer',
      () => ({ inputs: [{ name: 'x', shape: [3], datatype: 'FP64', data: [1, 2] }] }),
      400,
      /needs 3 values/,
    ],
    [
      'a 2-D shape wider than one column',
      '/v2/models/tier/infer',
      () => ({ inputs: [{ name: 'x', shape: [1, 2], datatype: 'FP64', data: [1, 2] }] }),
      400,
      /\[N\] or \[N, 1\]/,
    ],
    [
      'inputs with different row counts',
      '/v2/models/tier/infer',
      () => ({
        inputs: [
          { name: 'x', shape: [1], datatype: 'FP64', data: [1] },
          { name: 'count', shape: [2], datatype: 'INT64', data: [1, 2] },
        ],
      }),
      400,
      /other inputs have/,
    ],
    [
      'zero rows',
      '/v2/models/tier/infer',
      () => ({ inputs: [{ name: 'x', shape: [0], datatype: 'FP64', data: [] }] }),
      400,
      /empty batch/,
    ],
    [
      'an unknown requested output',
      '/v2/models/tier/infer',
      () => ({ ...good(), outputs: [{ name: 'logits' }] }),
      400,
      /unknown output "logits"/,
    ],
    [
      'a category value of the wrong type',
      '/v2/models/tier/infer',
      () => ({ inputs: [{ name: 'flag', shape: [1], datatype: 'BOOL', data: ['yes'] }] }),
      400,
      /not a BOOL/,
    ],
    [
      'data nested deeper than the shape',
      '/v2/models/tier/infer',
      () => ({ inputs: [{ name: 'x', shape: [1], datatype: 'FP64', data: [[[1]]] }] }),
      400,
      /nested deeper/,
    ],
  ];

  for (const [name, path, body, status, message] of cases) {
    it(name, async () => {
      const reply = await postJson(`${server.url}${path}`, body());
      expect(reply.status).toBe(status);
      expect(reply.json).toEqual({ error: expect.stringMatching(message) });
    });
  }

  it('malformed JSON is 400 and a non-JSON content type 415', async () => {
    const bad = await call(`${server.url}/v2/models/tier/infer`, {
      method: 'POST',
      body: '{"inputs": [',
      headers: { 'content-type': 'application/json' },
    });
    expect(bad.status).toBe(400);
    expect(bad.json).toEqual({ error: expect.stringContaining('not valid JSON') });
    const csv = await call(`${server.url}/v2/models/tier/infer`, {
      method: 'POST',
      body: '1,2,3',
      headers: { 'content-type': 'text/csv' },
    });
    expect(csv.status).toBe(415);
  });

  it('metadata and readiness of unknown models or versions are 404 with an error', async () => {
    for (const path of [
      '/v2/models/nope',
      '/v2/models/nope/ready',
      '/v2/models/tier/versions/99',
      '/v2/models/tier/versions/99/ready',
    ]) {
      const reply = await call(`${server.url}${path}`);
      expect(reply.status, path).toBe(404);
      expect(reply.json, path).toEqual({ error: expect.any(String) });
    }
  });

  it('wrong methods are 405 and unknown sub-paths 404', async () => {
    expect((await call(`${server.url}/v2/models/tier/infer`)).status).toBe(405);
    expect((await postJson(`${server.url}/v2/models/tier`, {})).status).toBe(405);
    expect((await call(`${server.url}/v2/models/tier/explain`)).status).toBe(404);
    expect((await call(`${server.url}/v2/models/tier/versions`)).status).toBe(404);
  });
});
