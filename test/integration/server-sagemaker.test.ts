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

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let spam: ModelFixture;
/** Spambase's column names, or the synthetic stand-in's on a checkout without ../shared. */
const inputName = (i: number) => spam.transform.inputs[i]?.name as string;
let price: ModelFixture;
let tier: ModelFixture;
let single: RunningServer;
let multi: RunningServer;

interface Classified {
  label: string;
  probabilities: Record<string, number>;
}

function csvLine(row: Record<string, unknown>): string {
  return Object.values(row)
    .map((v) => (v === null ? '' : String(v)))
    .join(',');
}

beforeAll(async () => {
  spam = spambaseFixture({ limit: 1500 });
  price = mixedFixture('regression');
  tier = mixedFixture('multiclass');
  single = await startServer({ source: sourceOf(spam) });
  multi = await startServer({ source: sourceOf(spam, price, tier), defaultModel: 'spam' });
});

afterAll(async () => {
  await single?.close();
  await multi?.close();
});

describe('GET /ping', () => {
  it('answers 200 with an empty body once the model is loaded', async () => {
    const reply = await call(`${single.url}/ping`);
    expect(reply.status).toBe(200);
    expect(reply.text).toBe('');
  });

  it('answers 503 while models are still loading', async () => {
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const inner = sourceOf(spam);
    const slow = {
      list: () => inner.list(),
      current: (name: string) => inner.current(name),
      load: async (name: string, version?: string) => {
        await gate;
        return inner.load(name, version);
      },
    };
    const { createInferenceServer } = await import('../../lib/serving/server.ts');
    const { silentLogger } = await import('../../lib/serving/model-host.ts');
    const inference = createInferenceServer({ source: slow, logger: silentLogger });
    const listening = inference.listen(0, '127.0.0.1');
    // listen() binds first and resolves only after loading, so find the port from the server itself.
    while (!inference.server.listening) await new Promise((r) => setTimeout(r, 5));
    const address = inference.server.address();
    const port = typeof address === 'object' && address !== null ? address.port : 0;
    const before = await call(`http://127.0.0.1:${port}/ping`);
    const invocation = await postJson(`http://127.0.0.1:${port}/invocations`, { instances: [spam.rows[0]] });
    release();
    await listening;
    const after = await call(`http://127.0.0.1:${port}/ping`);
    await inference.close();
    expect(before.status).toBe(503);
    expect(invocation.status).toBe(503);
    expect(invocation.json).toEqual({ error: expect.stringContaining('loading') });
    expect(after.status).toBe(200);
  });
});

describe('POST /invocations', () => {
  it('scores JSON object instances exactly as OnnxModel does, with a request id', async () => {
    const rows = spam.rows.slice(0, 25);
    const reply = await postJson(`${single.url}/invocations`, { instances: rows });
    expect(reply.status).toBe(200);
    expect(reply.headers.get('x-kiln-request-id')).toMatch(UUID);
    const { predictions } = reply.json as { predictions: Classified[] };
    const direct = await directPredictions(spam, rows);
    expect(predictions).toHaveLength(25);
    predictions.forEach((p, i) => {
      const expectedLabel = spam.trained.classes[direct.labels?.[i] ?? -1];
      expect(p.label).toBe(expectedLabel);
      expect(p.probabilities.nonspam).toBe(direct.probabilities?.[i * 2]);
      expect(p.probabilities.spam).toBe(direct.probabilities?.[i * 2 + 1]);
    });
    // The labels are the argmax of the probabilities the server reports.
    for (const p of predictions) {
      expect(p.label).toBe((p.probabilities.spam ?? 0) > (p.probabilities.nonspam ?? 0) ? 'spam' : 'nonspam');
    }
  });

  it('gives the same answer for array instances and for CSV rows', async () => {
    const rows = spam.rows.slice(100, 110);
    const objects = await postJson(`${single.url}/invocations`, { instances: rows });
    const arrays = await postJson(`${single.url}/invocations`, {
      instances: rows.map((r) => Object.values(r)),
    });
    const csv = await call(`${single.url}/invocations`, {
      method: 'POST',
      body: `${rows.map(csvLine).join('\r\n')}\r\n`,
      headers: { 'content-type': 'text/csv' },
    });
    expect(objects.status).toBe(200);
    expect(arrays.json).toEqual(objects.json);
    expect(csv.json).toEqual(objects.json);
  });

  it('detects a CSV header row and then accepts columns in any order, ignoring the target', async () => {
    const rows = spam.rows.slice(0, 3);
    const names = Object.keys(spam.rows[0] ?? {}).reverse();
    const header = ['type', ...names].join(',');
    const body = [header, ...rows.map((r) => ['spam', ...names.map((n) => String(r[n]))].join(','))].join(
      '\n',
    );
    const reply = await call(`${single.url}/invocations`, {
      method: 'POST',
      body,
      headers: { 'content-type': 'text/csv' },
    });
    const expected = await postJson(`${single.url}/invocations`, { instances: rows });
    expect(reply.status).toBe(200);
    expect(reply.json).toEqual(expected.json);
  });

  it('reads JSON Lines bodies, one instance per line', async () => {
    const rows = spam.rows.slice(30, 33);
    const lines = await call(`${single.url}/invocations`, {
      method: 'POST',
      body: `${rows.map((r) => JSON.stringify(r)).join('\n')}\n`,
      headers: { 'content-type': 'application/jsonlines' },
    });
    const expected = await postJson(`${single.url}/invocations`, { instances: rows });
    expect(lines.status).toBe(200);
    expect(lines.json).toEqual(expected.json);
  });

  it('answers CSV when asked with Accept: text/csv', async () => {
    const rows = spam.rows.slice(0, 4);
    const reply = await postJson(`${single.url}/invocations`, { instances: rows }, { accept: 'text/csv' });
    expect(reply.status).toBe(200);
    expect(reply.headers.get('content-type')).toMatch(/^text\/csv/);
    const direct = await directPredictions(spam, rows);
    const lines = reply.text.trimEnd().split('\n');
    expect(lines).toHaveLength(4);
    lines.forEach((line, i) => {
      const [label, p0, p1] = line.split(',');
      expect(label).toBe(spam.trained.classes[direct.labels?.[i] ?? -1]);
      expect(Number(p0)).toBe(direct.probabilities?.[i * 2]);
      expect(Number(p1)).toBe(direct.probabilities?.[i * 2 + 1]);
    });
  });

  it('treats empty CSV fields and null JSON values as missing, like the transform does', async () => {
    const row = { ...spam.rows[0], [inputName(0)]: null, [inputName(2)]: null };
    const json = await postJson(`${single.url}/invocations`, { instances: [row] });
    const csv = await call(`${single.url}/invocations`, {
      method: 'POST',
      body: csvLine(row),
      headers: { 'content-type': 'text/csv' },
    });
    const direct = await directPredictions(spam, [row]);
    expect(json.status).toBe(200);
    expect((json.json as { predictions: Classified[] }).predictions[0]?.probabilities.spam).toBe(
      direct.probabilities?.[1],
    );
    expect(csv.json).toEqual(json.json);
  });

  it('serves regression and multiclass models with mixed column types', async () => {
    const priceRows = price.rows.slice(0, 5);
    const reply = await postJson(`${multi.url}/invocations?model=price`, { instances: priceRows });
    expect(reply.status).toBe(200);
    const direct = await directPredictions(price, priceRows);
    expect(reply.json).toEqual({ predictions: Array.from(direct.values ?? [], (value) => ({ value })) });

    // CSV strings for integer, string and boolean columns go through the same coercion.
    const csv = await call(`${multi.url}/invocations`, {
      method: 'POST',
      body: '1.5,3,red,true\n7.25,,blue,no\n',
      headers: { 'content-type': 'text/csv', 'x-amzn-sagemaker-target-model': 'tier' },
    });
    expect(csv.status).toBe(200);
    const expected = await directPredictions(tier, [
      { x: 1.5, count: 3, color: 'red', flag: true },
      { x: 7.25, count: null, color: 'blue', flag: false },
    ]);
    const predictions = (csv.json as { predictions: Classified[] }).predictions;
    expect(predictions.map((p) => p.label)).toEqual(
      Array.from(expected.labels ?? [], (k) => tier.trained.classes[k]),
    );
    expect(Object.keys(predictions[0]?.probabilities ?? {})).toEqual(['high', 'low', 'mid']);
  });

  it('routes by X-Amzn-SageMaker-Target-Model (also as NAME.tar.gz) or ?model=, else the default', async () => {
    const row = tier.rows[0];
    const byHeader = await postJson(
      `${multi.url}/invocations`,
      { instances: [row] },
      {
        'x-amzn-sagemaker-target-model': 'tier.tar.gz',
      },
    );
    const byQuery = await postJson(`${multi.url}/invocations?model=tier`, { instances: [row] });
    expect(byHeader.status).toBe(200);
    expect(byQuery.json).toEqual(byHeader.json);
    const byDefault = await postJson(`${multi.url}/invocations`, { instances: [spam.rows[0]] });
    expect(byDefault.status).toBe(200);
    const unknown = await postJson(`${multi.url}/invocations?model=nope`, { instances: [row] });
    expect(unknown.status).toBe(404);
    expect(unknown.json).toEqual({ error: expect.stringContaining('nope') });
  });

  it('refuses a request without a model name when several models and no default are served', async () => {
    const server = await startServer({ source: sourceOf(price, tier) });
    try {
      const reply = await postJson(`${server.url}/invocations`, { instances: [tier.rows[0]] });
      expect(reply.status).toBe(400);
      expect(reply.json).toEqual({ error: expect.stringContaining('X-Amzn-SageMaker-Target-Model') });
    } finally {
      await server.close();
    }
  });
});

describe('bad /invocations requests get a 4xx JSON error naming the problem', () => {
  const cases: Array<[string, () => { body: string; type?: string; accept?: string }, number, RegExp]> = [
    ['malformed JSON', () => ({ body: '{"instances": [', type: 'application/json' }), 400, /not valid JSON/],
    ['no instances key', () => ({ body: '{"rows": []}', type: 'application/json' }), 400, /instances/],
    ['empty batch', () => ({ body: '{"instances": []}', type: 'application/json' }), 400, /empty batch/],
    ['empty CSV', () => ({ body: '\n\n', type: 'text/csv' }), 400, /empty batch/],
    [
      'wrong feature count',
      () => ({ body: JSON.stringify({ instances: [[1, 2, 3]] }), type: 'application/json' }),
      400,
      /expected 57 values/,
    ],
    [
      'wrong type',
      () => ({
        body: JSON.stringify({ instances: [{ ...spam.rows[0], [inputName(0)]: 'lots' }] }),
        type: 'application/json',
      }),
      400,
      /column "[^"]+": expected number, got "lots"/,
    ],
    [
      'NaN in CSV',
      () => ({ body: csvLine({ ...spam.rows[0], [inputName(0)]: 'NaN' }), type: 'text/csv' }),
      400,
      /not a finite number/,
    ],
    [
      'Infinity in CSV',
      () => ({ body: csvLine({ ...spam.rows[0], [inputName(0)]: '-Infinity' }), type: 'text/csv' }),
      400,
      /not a finite number/,
    ],
    [
      'a number too big for a double',
      () => ({ body: `{"instances": [[${'9'.repeat(400)}${',0'.repeat(56)}]]}`, type: 'application/json' }),
      400,
      /finite/,
    ],
    [
      'the target column as an input',
      () => ({
        body: JSON.stringify({ instances: [{ ...spam.rows[0], type: 'spam' }] }),
        type: 'application/json',
      }),
      400,
      /target/,
    ],
    [
      'an instance that is a number',
      () => ({ body: '{"instances": [42]}', type: 'application/json' }),
      400,
      /instance 0/,
    ],
    ['unterminated CSV quote', () => ({ body: '"abc,1,2', type: 'text/csv' }), 400, /unterminated/],
    ['unsupported content type', () => ({ body: 'x', type: 'image/png' }), 415, /Content-Type/],
    [
      'unacceptable Accept',
      () => ({
        body: JSON.stringify({ instances: [spam.rows[0]] }),
        type: 'application/json',
        accept: 'image/png',
      }),
      406,
      /image\/png/,
    ],
  ];

  for (const [name, make, status, message] of cases) {
    it(name, async () => {
      const { body, type, accept } = make();
      const headers: Record<string, string> = {};
      if (type) headers['content-type'] = type;
      if (accept) headers.accept = accept;
      const reply = await call(`${single.url}/invocations`, { method: 'POST', body, headers });
      expect(reply.status).toBe(status);
      expect(reply.headers.get('content-type')).toBe('application/json');
      expect(reply.json).toEqual({ error: expect.stringMatching(message) });
    });
  }

  it('GET /invocations is 405 with Allow, and unknown paths are 404', async () => {
    const get = await call(`${single.url}/invocations`);
    expect(get.status).toBe(405);
    expect(get.headers.get('allow')).toBe('POST');
    const missing = await call(`${single.url}/nope`);
    expect(missing.status).toBe(404);
    expect(missing.json).toEqual({ error: expect.stringContaining('/nope') });
  });
});
