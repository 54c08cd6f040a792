import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { createServer } from 'node:net';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  call,
  directPredictions,
  type ModelFixture,
  postJson,
  spambaseFixture,
} from '../support/model-fixtures.ts';
import { tempDir } from '../support/temp.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const ENTRY = join(ROOT, 'containers/inference/server.ts');

let spam: ModelFixture;

beforeAll(() => {
  spam = spambaseFixture({ limit: 1000 });
});

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      probe.close(() => resolve(typeof address === 'object' && address !== null ? address.port : 0));
    });
  });
}

/** Runs the container entry point the way the image does (`<entry> serve`), through tsx. */
function start(env: Record<string, string>): {
  child: ChildProcess;
  logs: () => string;
  exited: Promise<number | null>;
} {
  const child = spawn(process.execPath, ['--import', 'tsx', ENTRY, 'serve'], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let logs = '';
  child.stdout?.on('data', (d) => {
    logs += d;
  });
  child.stderr?.on('data', (d) => {
    logs += d;
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, logs: () => logs, exited };
}

async function waitForPing(url: string, exited: Promise<number | null>): Promise<void> {
  let done = false;
  void exited.then(() => {
    done = true;
  });
  for (;;) {
    if (done) throw new Error('the server exited before answering /ping');
    try {
      if ((await call(`${url}/ping`)).status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('containers/inference/server.ts', () => {
  it('serves /opt/ml/model-style artifacts on SAGEMAKER_BIND_TO_PORT, captures, and exits 0 on SIGTERM', async () => {
    const dir = await tempDir();
    const modelDir = join(dir, 'model');
    const lake = join(dir, 'lake');
    await mkdir(modelDir);
    await writeFile(join(modelDir, 'model.onnx'), spam.bundle.onnx);
    await writeFile(join(modelDir, 'transform.json'), JSON.stringify(spam.transform));
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const server = start({
      SAGEMAKER_BIND_TO_PORT: String(port),
      KILN_BIND_HOST: '127.0.0.1',
      KILN_MODEL_DIR: modelDir,
      KILN_MODEL_NAME: 'spam',
      KILN_CAPTURE_LAKE: lake,
      KILN_EXECUTION_PROVIDER: 'cpu',
      SAGEMAKER_MODEL_SERVER_WORKERS: '1',
    });
    try {
      await waitForPing(url, server.exited);
      const rows = spam.rows.slice(0, 3);
      const reply = await postJson(`${url}/invocations`, { instances: rows });
      expect(reply.status).toBe(200);
      const direct = await directPredictions(spam, rows);
      const predictions = (reply.json as { predictions: Array<{ probabilities: Record<string, number> }> })
        .predictions;
      expect(predictions.map((p) => p.probabilities.spam)).toEqual(
        [0, 1, 2].map((i) => direct.probabilities?.[i * 2 + 1]),
      );
      const meta = await call(`${url}/v2/models/spam`);
      expect(meta.json).toMatchObject({ name: 'spam', properties: { execution_provider: 'cpu' } });
      // The execution provider is logged at start-up.
      expect(server.logs()).toMatch(/"message":"model loaded".*"provider":"cpu"/);
    } finally {
      server.child.kill('SIGTERM');
    }
    expect(await server.exited).toBe(0);
    expect(server.logs()).toContain('"signal":"SIGTERM"');
    // Capture buffered in memory was flushed to the lake before exit.
    const files = (await readdir(lake, { recursive: true })).filter((f) => String(f).endsWith('.jsonl'));
    expect(files).toHaveLength(1);
    const record = JSON.parse(await readFile(join(lake, String(files[0])), 'utf8')) as {
      model: string;
      inputs: unknown[];
    };
    expect(record.model).toBe('spam');
    expect(record.inputs).toHaveLength(3);
  });

  it('fails fast, with exit code 1, when the model directory is empty or the environment is invalid', async () => {
    const dir = await tempDir();
    for (const workers of ['1', '2']) {
      const missing = start({
        SAGEMAKER_BIND_TO_PORT: String(await freePort()),
        KILN_MODEL_DIR: dir,
        KILN_BIND_HOST: '127.0.0.1',
        SAGEMAKER_MODEL_SERVER_WORKERS: workers,
      });
      expect(await missing.exited).toBe(1);
      expect(missing.logs()).toContain('model.onnx');
      if (workers === '2') expect(missing.logs()).toContain('a worker failed to start; stopping');
    }
    // Without SAGEMAKER_MODEL_SERVER_WORKERS, a CPU server runs one worker per vCPU and logs why.
    const defaulted = start({
      SAGEMAKER_BIND_TO_PORT: String(await freePort()),
      KILN_MODEL_DIR: dir,
      KILN_BIND_HOST: '127.0.0.1',
      KILN_EXECUTION_PROVIDER: 'cpu',
    });
    expect(await defaulted.exited).toBe(1);
    const vcpus = availableParallelism();
    if (vcpus > 1)
      expect(defaulted.logs()).toContain(`"workers":${vcpus},"reason":"one per vCPU (${vcpus})"`);
    const invalid = start({ SAGEMAKER_BIND_TO_PORT: 'eighty', KILN_MODEL_DIR: dir });
    expect(await invalid.exited).toBe(1);
    expect(invalid.logs()).toContain('SAGEMAKER_BIND_TO_PORT');
  });

  it('runs SAGEMAKER_MODEL_SERVER_WORKERS processes on one port, reports metrics for all of them, replaces a dead one', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'model.onnx'), spam.bundle.onnx);
    await writeFile(join(dir, 'transform.json'), JSON.stringify(spam.transform));
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const server = start({
      SAGEMAKER_BIND_TO_PORT: String(port),
      KILN_BIND_HOST: '127.0.0.1',
      KILN_MODEL_DIR: dir,
      KILN_MODEL_NAME: 'spam',
      KILN_EXECUTION_PROVIDER: 'cpu',
      SAGEMAKER_MODEL_SERVER_WORKERS: '2',
    });
    const primary = server.child.pid as number;
    const workers = async () =>
      (await readFile(`/proc/${primary}/task/${primary}/children`, 'utf8'))
        .trim()
        .split(/\s+/)
        .filter(Boolean);
    const waitFor = async (what: RegExp, times: number) => {
      while ((server.logs().match(new RegExp(what.source, 'g')) ?? []).length < times) {
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    try {
      await waitForPing(url, server.exited);
      await waitFor(/"all workers ready"/, 1);
      expect(await workers()).toHaveLength(2);
      // One request per new connection: the primary hands connections to the workers in turn.
      const rows = spam.rows.slice(0, 10);
      for (const row of rows) {
        const reply = await postOnNewConnection(`${url}/invocations`, JSON.stringify({ instances: [row] }));
        expect(reply.status).toBe(200);
      }
      // Whichever worker answers /metrics reports both workers' requests.
      for (let i = 0; i < 3; i++) {
        const text = await getOnNewConnection(`${url}/metrics`);
        const scored = /^kiln_inference_rows_total\{model="spam",[^}]*\} (\d+)$/m.exec(text)?.[1];
        expect(Number(scored)).toBe(rows.length);
        expect(text.match(/^# TYPE kiln_inference_rows_total counter$/gm)).toHaveLength(1);
      }
      // A worker that dies is replaced, and the server keeps answering.
      const [victim] = await workers();
      process.kill(Number(victim), 'SIGKILL');
      await waitFor(/"worker died; starting a replacement"/, 1);
      await waitFor(/"all workers ready"/, 2);
      expect(await workers()).not.toContain(victim);
      for (const row of rows.slice(0, 4)) {
        expect(
          (await postOnNewConnection(`${url}/invocations`, JSON.stringify({ instances: [row] }))).status,
        ).toBe(200);
      }
    } finally {
      server.child.kill('SIGTERM');
    }
    expect(await server.exited).toBe(0);
    expect(server.logs()).toContain('"message":"stopping workers","reason":"SIGTERM"');
  });
});

function onNewConnection(
  url: string,
  method: string,
  body?: string,
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const request = http.request(
      url,
      { method, agent: false, headers: body === undefined ? {} : { 'content-type': 'application/json' } },
      (response) => {
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => {
          text += chunk;
        });
        response.on('end', () => resolve({ status: response.statusCode ?? 0, text }));
      },
    );
    request.on('error', reject);
    request.end(body);
  });
}

const postOnNewConnection = (url: string, body: string) => onNewConnection(url, 'POST', body);
const getOnNewConnection = async (url: string) => (await onNewConnection(url, 'GET')).text;
