import http from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  call,
  directPredictions,
  type ModelFixture,
  mixedFixture,
  postJson,
  type RunningServer,
  rng,
  sourceOf,
  spambaseFixture,
  startServer,
} from '../support/model-fixtures.ts';

let spam: ModelFixture;
let tier: ModelFixture;
let server: RunningServer;
let port: number;

beforeAll(async () => {
  spam = spambaseFixture({ limit: 1000 });
  tier = mixedFixture('multiclass');
  server = await startServer({
    source: sourceOf(spam, tier),
    defaultModel: 'spam',
    limits: {
      maxBodyBytes: 64 * 1024,
      maxRowsPerRequest: 100,
      headersTimeoutMs: 300,
      requestTimeoutMs: 1000,
      connectionsCheckingIntervalMs: 50,
      maxHeaderBytes: 4096,
    },
  });
  port = Number(new URL(server.url).port);
});

afterAll(async () => {
  await server?.close();
});

/** Writes raw bytes on a fresh connection and collects everything the server sends until it closes. */
function raw(chunks: Array<string | Buffer>, pauseMs = 0): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let received = '';
    socket.on('data', (d) => {
      received += d.toString('latin1');
    });
    socket.on('error', (e: NodeJS.ErrnoException) =>
      e.code === 'ECONNRESET' ? resolve(received) : reject(e),
    );
    socket.on('close', () => resolve(received));
    socket.on('connect', async () => {
      for (const c of chunks) {
        if (socket.destroyed) return;
        socket.write(c);
        if (pauseMs) await new Promise((r) => setTimeout(r, pauseMs));
      }
    });
  });
}

function statusAndJson(response: string): { status: number; json: unknown } {
  const status = Number(response.slice(9, 12));
  const body = response.slice(response.indexOf('\r\n\r\n') + 4);
  return { status, json: JSON.parse(body) };
}

describe('limits', () => {
  it('a body over the limit is 413, whether announced by Content-Length or streamed chunked', async () => {
    const big = JSON.stringify({ instances: Array.from({ length: 400 }, () => spam.rows[0]) });
    expect(big.length).toBeGreaterThan(64 * 1024);
    const announced = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request(
        {
          port,
          host: '127.0.0.1',
          method: 'POST',
          path: '/invocations',
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(big) },
        },
        (res) => {
          let body = '';
          res.on('data', (d) => {
            body += d;
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        },
      );
      req.on('error', reject);
      // Send only the headers: the server must answer without waiting for (or reading) the body.
      req.flushHeaders();
    });
    expect(announced.status).toBe(413);
    expect(JSON.parse(announced.body)).toEqual({ error: expect.stringContaining('limit') });

    const chunked = await raw([
      'POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n',
      ...Array.from({ length: 10 }, () => `2000\r\n${'x'.repeat(0x2000)}\r\n`),
    ]);
    expect(statusAndJson(chunked)).toEqual({
      status: 413,
      json: { error: expect.stringContaining('limit') },
    });
  });

  it('more rows than allowed is 413', async () => {
    const reply = await postJson(`${server.url}/invocations`, {
      instances: spam.rows.slice(0, 101).map((r) => Object.values(r).slice(0, 3)),
    });
    expect(reply.status).toBe(413);
    expect(reply.json).toEqual({ error: expect.stringContaining('100') });
    const csv = await call(`${server.url}/invocations`, {
      method: 'POST',
      body: '1\n'.repeat(150),
      headers: { 'content-type': 'text/csv' },
    });
    expect(csv.status).toBe(413);
  });

  it('slow-loris: headers that never finish get a 408 JSON answer and the connection is closed', async () => {
    const response = await raw(['POST /invocations HTTP/1.1\r\n', 'Host: x\r\n', 'X-Slow: 1\r\n'], 200);
    expect(statusAndJson(response)).toEqual({
      status: 408,
      json: { error: expect.stringContaining('timed out') },
    });
  });

  it('a body that trickles in beyond the request timeout is cut off', async () => {
    const response = await raw(
      [
        'POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: 100\r\n\r\n',
        ...Array.from({ length: 30 }, () => '1'),
      ],
      100,
    );
    expect(response.startsWith('HTTP/1.1 408')).toBe(true);
  });

  it('oversized headers are 431 and garbage is 400, both in JSON', async () => {
    const huge = await raw([`GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(8000)}\r\n\r\n`]);
    expect(statusAndJson(huge)).toEqual({ status: 431, json: { error: expect.any(String) } });
    const garbage = await raw(['\x00\x01\x02 NOT HTTP\r\n\r\n']);
    expect(statusAndJson(garbage)).toEqual({ status: 400, json: { error: 'malformed HTTP request' } });
  });

  it('/ping answers while inference requests are queued', async () => {
    // Default timeouts here: the 300 ms header timeout above is for the slow-loris test only.
    const busy = await startServer({ source: sourceOf(spam) });
    try {
      let answered = 0;
      const load = Array.from({ length: 300 }, (_, i) =>
        postJson(`${busy.url}/invocations`, { instances: spam.rows.slice(i % 50, (i % 50) + 20) }).then(
          (r) => {
            answered++;
            return r;
          },
        ),
      );
      const ping = await call(`${busy.url}/ping`);
      const answeredBeforePing = answered;
      expect(ping.status).toBe(200);
      const replies = await Promise.all(load);
      expect(replies.every((r) => r.status === 200)).toBe(true);
      // The health check did not wait for the inference queue to empty.
      expect(answeredBeforePing).toBeLessThan(300);
    } finally {
      await busy.close();
    }
  });
});

describe('graceful shutdown', () => {
  it('close() answers requests already in flight, flushes capture, then refuses new connections', async () => {
    const written: string[] = [];
    const draining = await startServer({
      source: sourceOf(spam),
      capture: {
        sink: {
          async write(_key, body) {
            written.push(body);
          },
        },
        flushIntervalMs: 0,
      },
    });
    const drainingPort = Number(new URL(draining.url).port);
    // Ten requests whose bodies are held back by one byte: in flight at the server when close() starts.
    const pending = spam.rows.slice(0, 10).map((row) => {
      const body = JSON.stringify({ instances: [row] });
      const req = http.request({
        port: drainingPort,
        host: '127.0.0.1',
        method: 'POST',
        path: '/invocations',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      });
      const reply = new Promise<{ status: number; connection: string | undefined }>((resolve, reject) => {
        req.on('response', (res) => {
          res.resume();
          res.on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection }));
        });
        req.on('error', reject);
      });
      req.write(body.slice(0, -1));
      return { req, last: body.slice(-1), reply };
    });
    while (draining.inference.activeRequests < 10) await new Promise((r) => setTimeout(r, 5));
    const closed = draining.close();
    await new Promise((r) => setTimeout(r, 50));
    await expect(fetch(`${draining.url}/ping`)).rejects.toThrow();
    for (const p of pending) p.req.end(p.last);
    const replies = await Promise.all(pending.map((p) => p.reply));
    await closed;
    expect(replies).toEqual(replies.map(() => ({ status: 200, connection: 'close' })));
    expect(written.join('').trimEnd().split('\n')).toHaveLength(10);
  });
});

/** Malformed requests of many kinds, reproducible from the seed. */
function malformed(random: () => number): {
  path: string;
  method: string;
  body: string | Uint8Array;
  type?: string;
} {
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
  const row = spam.rows[Math.floor(random() * 100)] ?? {};
  const names = Object.keys(row);
  const valid = JSON.stringify({ instances: [row] });
  // Every one is wrong for a number column ('', 'NA' and 'null' would be legitimate missing values).
  const badValues = [
    'NaN',
    'Infinity',
    '-Infinity',
    'nan',
    '1e999',
    '0x10',
    '--1',
    '"',
    '[]',
    'abc',
    '1.2.3',
    '∞',
  ];
  const badJsonValues = [
    '"NaN"',
    '"Infinity"',
    '1e999',
    '-1e400',
    'true',
    '{}',
    '[]',
    '[1]',
    '{"a":1}',
    '"12abc"',
    '"1e5000"',
  ];
  const v2Valid = () => ({
    inputs: tier.transform.inputs.map((c) => ({
      name: c.name,
      datatype: { number: 'FP64', integer: 'INT64', boolean: 'BOOL', string: 'BYTES', timestamp: 'BYTES' }[
        c.type
      ],
      shape: [1],
      data: [tier.rows[0]?.[c.name]],
    })),
  });
  switch (Math.floor(random() * 12)) {
    case 0: {
      const bytes = new Uint8Array(1 + Math.floor(random() * 300));
      for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(random() * 256);
      if (bytes[0] === 0x7b || bytes[0] === 0x5b) bytes[0] = 0x21;
      return {
        path: '/invocations',
        method: 'POST',
        body: bytes,
        type: pick(['application/json', 'text/csv']),
      };
    }
    case 1:
      return {
        path: '/invocations',
        method: 'POST',
        body: valid.slice(0, Math.floor(random() * (valid.length - 1))),
        type: 'application/json',
      };
    case 2: {
      const name = pick(names);
      const body = valid.replace(
        `"${name}":${JSON.stringify(row[name])}`,
        `"${name}":${pick(badJsonValues)}`,
      );
      return { path: '/invocations', method: 'POST', body, type: 'application/json' };
    }
    case 3: {
      const values = Object.values(row).map(String);
      if (random() < 0.7) values[Math.floor(random() * values.length)] = pick(badValues);
      else values.splice(Math.floor(random() * values.length), 1);
      return { path: '/invocations', method: 'POST', body: values.join(','), type: 'text/csv' };
    }
    case 4: {
      const depth = 1 + Math.floor(random() * 50_000);
      const inner =
        random() < 0.5
          ? '['.repeat(depth) + ']'.repeat(depth)
          : `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
      return {
        path: pick(['/invocations', '/v2/models/tier/infer']),
        method: 'POST',
        body: `{"instances":${inner}}`,
        type: 'application/json',
      };
    }
    case 5:
      return {
        path: pick(['/invocations', '/v2/models/tier/infer']),
        method: 'POST',
        body: valid,
        type: pick([
          'image/png',
          'multipart/form-data; boundary=x',
          'text/xml',
          'application/x-www-form-urlencoded',
        ]),
      };
    case 6: {
      const request = v2Valid() as { inputs: Array<Record<string, unknown>> };
      const mutation = Math.floor(random() * 7);
      // Data mutations target the number column: "NaN" is a fine category for the string column.
      const tensor =
        (mutation === 2 ? request.inputs[0] : request.inputs[Math.floor(random() * request.inputs.length)]) ??
        {};
      if (mutation === 0) tensor.datatype = pick(['FP8', 'STRING', '', 42, null]);
      if (mutation === 1) tensor.shape = pick([[2], [1, 3], [-1], [], ['1'], 'x', [1, 1, 1]]);
      if (mutation === 2)
        tensor.data = pick([['NaN'], [{}], [[[1]]], 'abc', [true, false], [null, null], [[]]]);
      if (mutation === 3) delete tensor.name;
      if (mutation === 4) tensor.name = pick(['', 'nope', '__proto__', 'x'.repeat(1000)]);
      if (mutation === 5) delete tensor.data;
      if (mutation === 6) request.inputs.push({ ...tensor });
      return {
        path: '/v2/models/tier/infer',
        method: 'POST',
        body: JSON.stringify(request),
        type: 'application/json',
      };
    }
    case 7: {
      const body = pick([
        '{}',
        '[]',
        'null',
        '42',
        '"x"',
        '{"inputs":null}',
        '{"inputs":[null]}',
        '{"instances":{}}',
      ]);
      return {
        path: pick(['/invocations', '/v2/models/tier/infer']),
        method: 'POST',
        body,
        type: 'application/json',
      };
    }
    case 8:
      return {
        path: '/invocations',
        method: 'POST',
        body: JSON.stringify({
          instances: [Object.fromEntries(names.map((n) => [n, random() < 0.5 ? 'x' : row[n]]))],
        }),
        type: 'application/json',
      };
    case 9:
      return {
        path: pick([
          '/v2/models/nope/infer',
          '/v2/models/tier/versions/9/infer',
          '/invocations?model=nope',
          '/v2/models/%E0%A4%A/infer',
        ]),
        method: 'POST',
        body: valid,
        type: 'application/json',
      };
    case 10:
      return {
        path: pick(['/', '/v3', '/v2/models', '/v2/models/tier/infer/extra', '/ping/x', '/../etc/passwd']),
        method: pick(['GET', 'POST', 'PUT', 'DELETE']),
        body: '',
      };
    default: {
      const n = 1 + Math.floor(random() * 3);
      const quoted = `"${'x'.repeat(n)}`;
      return { path: '/invocations', method: 'POST', body: `${quoted},1,2\n3,"4`, type: 'text/csv' };
    }
  }
}

describe('fuzz', () => {
  it('3000 malformed requests all get a 4xx JSON error; the server then still answers correctly', async () => {
    const random = rng(20240611);
    const failures: string[] = [];
    const statuses = new Map<number, number>();
    let next = 0;
    const total = 3000;
    const worker = async () => {
      while (next < total) {
        const i = next++;
        const request = malformed(random);
        const headers: Record<string, string> = {};
        if (request.type) headers['content-type'] = request.type;
        const init = request.method === 'GET' || request.method === 'DELETE' ? {} : { body: request.body };
        const reply = await call(`${server.url}${request.path}`, {
          method: request.method,
          headers,
          ...init,
        });
        statuses.set(reply.status, (statuses.get(reply.status) ?? 0) + 1);
        const error = (reply.json as { error?: unknown } | undefined)?.error;
        if (reply.status < 400 || reply.status > 499 || typeof error !== 'string') {
          failures.push(
            `#${i} ${request.method} ${request.path} ${String(request.body).slice(0, 200)} -> ${reply.status} ${reply.text.slice(0, 120)}`,
          );
        }
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
    expect(failures).toEqual([]);
    expect(statuses.size).toBeGreaterThan(3);

    expect((await call(`${server.url}/ping`)).status).toBe(200);
    const rows = spam.rows.slice(0, 3);
    const reply = await postJson(`${server.url}/invocations`, { instances: rows });
    const direct = await directPredictions(spam, rows);
    expect(reply.status).toBe(200);
    expect(
      (reply.json as { predictions: Array<{ probabilities: Record<string, number> }> }).predictions.map(
        (p) => p.probabilities.spam,
      ),
    ).toEqual([0, 1, 2].map((i) => direct.probabilities?.[i * 2 + 1]));
  });
});
