import { chmod, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { IntegrityError, ValidationError } from '../../lib/core/errors.ts';
import { MAX_REGISTRY_BODY_BYTES } from '../../lib/registry/api.ts';
import {
  createRegistryHttpServer,
  ensureLocalToken,
  localTokenPath,
  type RegistryHttpServer,
} from '../../lib/registry/http-server.ts';
import { FileSystemStore } from '../../lib/store/fs-store.ts';
import { gate, registration, registryWithEvents } from '../support/registry-fixtures.ts';
import { tempDir } from '../support/temp.ts';

const running: RegistryHttpServer[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((server) => server.close()));
});

async function start() {
  const home = await tempDir();
  const token = await ensureLocalToken(home);
  const store = new FileSystemStore(join(home, 'lake'));
  const { registry, bus, events } = registryWithEvents(store);
  const server = createRegistryHttpServer({ registry, token, user: 'owner' });
  running.push(server);
  const address = await server.listen(0);
  const url = `http://${address.address}:${address.port}`;
  const call = (
    method: string,
    path: string,
    options: { body?: unknown; token?: string | null; headers?: Record<string, string>; raw?: string } = {},
  ) =>
    fetch(`${url}${path}`, {
      method,
      headers: {
        ...(options.token === null ? {} : { authorization: `Bearer ${options.token ?? token}` }),
        ...(options.body !== undefined || options.raw !== undefined
          ? { 'content-type': 'application/json' }
          : {}),
        ...options.headers,
      },
      body: options.raw ?? (options.body === undefined ? undefined : JSON.stringify(options.body)),
    });
  return { home, token, store, registry, bus, events, address, url, call };
}

describe('ensureLocalToken', () => {
  it('creates a 256-bit token in a 0600 file once, and returns the same token afterwards', async () => {
    const home = await tempDir();
    const tokens = await Promise.all(Array.from({ length: 5 }, () => ensureLocalToken(home)));
    expect(new Set(tokens).size).toBe(1);
    expect(tokens[0]).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect((await stat(localTokenPath(home))).mode & 0o777).toBe(0o600);
    expect((await readFile(localTokenPath(home), 'utf8')).trim()).toBe(tokens[0]);
    expect(await ensureLocalToken(home)).toBe(tokens[0]);
  });

  it('refuses a token file other users can read, or one without a token', async () => {
    const home = await tempDir();
    await ensureLocalToken(home);
    await chmod(localTokenPath(home), 0o644);
    await expect(ensureLocalToken(home)).rejects.toThrow(/readable by other users \(mode 0644\)/);
    await chmod(localTokenPath(home), 0o600);
    await writeFile(localTokenPath(home), 'short\n');
    await expect(ensureLocalToken(home)).rejects.toBeInstanceOf(IntegrityError);
  });
});

describe('local registry server (real HTTP)', () => {
  it('listens on 127.0.0.1 and refuses requests without the right bearer token, changing nothing', async () => {
    const { address, call, registry, token } = await start();
    expect(address.address).toBe('127.0.0.1');
    await registry.register(registration('churn'));
    const wrongSameLength = `${token.slice(0, -1)}${token.endsWith('A') ? 'B' : 'A'}`;
    for (const attempt of [
      { token: null },
      { token: 'wrong' },
      { token: wrongSameLength },
      { token: `${token}x` },
      { token: null, headers: { authorization: `Basic ${Buffer.from(`u:${token}`).toString('base64')}` } },
      { token: null, headers: { authorization: `Bearer ${token} extra` } },
    ]) {
      const response = await call('POST', '/models/churn/versions/1/approve', {
        ...attempt,
        body: { reason: 'sneaky' },
      });
      expect(response.status, JSON.stringify(attempt)).toBe(401);
      expect(response.headers.get('www-authenticate')).toBe('Bearer realm="kiln-registry"');
      expect(await response.json()).toEqual({ error: 'missing or wrong bearer token' });
    }
    expect((await registry.getVersion('churn', 1)).approvals).toEqual([]);
    expect((await call('GET', '/models', { token: null })).status).toBe(401);
    expect(() => createRegistryHttpServer({ registry, token: 'short' })).toThrow(ValidationError);
  });

  it('serves the registry operations, recording the acting user in the audit log', async () => {
    const { call, registry, bus, events } = await start();
    await registry.register(registration('churn', { gate: gate(true, null, null) }));
    await registry.register(
      registration('churn', { hyperparameters: { max_iter: 20 }, metrics: { accuracy: 0.93 } }),
    );

    const models = await call('GET', '/models');
    expect(models.status).toBe(200);
    expect(await models.json()).toEqual({ models: ['churn'] });

    const promoted = await call('POST', '/models/churn/versions/1/promote', {
      body: { reason: 'first model' },
      headers: { 'x-kiln-actor': 'ci-bot' },
    });
    expect(promoted.status).toBe(200);
    expect(await promoted.json()).toMatchObject({ previousChampion: null, record: { stage: 'production' } });

    const approved = await call('POST', '/models/churn/versions/2/approve', {
      body: { reason: 'reviewed metrics' },
      headers: { 'x-kiln-actor': 'alice' },
    });
    expect(approved.status).toBe(200);
    expect(await approved.json()).toMatchObject({ stage: 'approved', approvals: [{ by: 'alice' }] });
    const byOwner = await call('POST', '/models/churn/versions/2/promote', { body: { reason: 'ship' } });
    expect(byOwner.status).toBe(200);

    const champion = await call('GET', '/models/churn/versions/champion');
    expect(await champion.json()).toMatchObject({ version: 2, lineage: { algorithm: 'gbdt' } });

    const diff = await call('GET', '/diff?a=churn@1&b=churn@champion');
    expect(diff.status).toBe(200);
    expect(await diff.json()).toMatchObject({
      a: 'churn@1',
      b: 'churn@2',
      params: { changed: { max_iter: { a: 10, b: 20 } } },
      metrics: { accuracy: { a: 0.9, b: 0.93 } },
      data: { sameData: true },
    });

    const rolled = await call('POST', '/models/churn/rollback', {
      body: { reason: 'alerts', from: 2 },
      headers: { 'x-kiln-actor': 'oncall' },
    });
    expect(await rolled.json()).toMatchObject({ from: 2, to: 1 });

    const audit = (await (await call('GET', '/models/churn/audit')).json()) as {
      entries: Array<{ action: string; actor: string }>;
    };
    expect(audit.entries.map((entry) => [entry.action, entry.actor])).toEqual([
      ['register', 'training-pipeline'],
      ['register', 'training-pipeline'],
      ['promote', 'ci-bot'],
      ['approve', 'alice'],
      ['promote', 'owner'],
      ['rollback', 'oncall'],
    ]);
    await bus.drain();
    expect(events.at(-2)).toMatchObject({
      detailType: 'AliasMoved',
      detail: { alias: 'champion', version: 1 },
    });
  });

  it('answers bad input with clear 4xx and changes nothing', async () => {
    const { call, registry, store } = await start();
    const record = await registry.register(registration('churn', { gate: gate(false, null, null) }));
    const snapshot = async () => (await store.list('registry/')).map((info) => `${info.key}:${info.etag}`);
    const before = await snapshot();
    const cases: Array<[string, string, { body?: unknown; raw?: string }, number, RegExp]> = [
      ['GET', '/models/nope', {}, 404, /model nope does not exist/],
      ['GET', '/models/Bad%20Name', {}, 400, /invalid model "Bad Name"/],
      ['GET', '/models/churn/versions/9', {}, 404, /churn@9 does not exist/],
      ['GET', '/models/churn/versions/no_such', {}, 400, /invalid ref/],
      ['GET', '/models/churn/versions/ghost', {}, 404, /no alias ghost/],
      ['POST', '/models/churn/versions/1/approve', { raw: '{not json' }, 400, /must be a JSON object/],
      ['POST', '/models/churn/versions/1/approve', { body: {} }, 400, /body.reason/],
      ['POST', '/models/churn/versions/1/approve', { body: { reason: 'x', extra: 1 } }, 400, /extra/],
      ['POST', '/models/churn/versions/0/approve', { body: { reason: 'x' } }, 400, /invalid version/],
      ['DELETE', '/models/churn', {}, 405, /DELETE is not allowed on \/models\/churn; use GET/],
      ['GET', '/nothing/here', {}, 404, /no such resource/],
      [
        'PUT',
        '/models/churn/aliases/champion',
        { body: { version: 1, reason: 'x' } },
        403,
        /only through promote/,
      ],
      ['GET', '/diff?a=churn@1', {}, 400, /query.b/],
      ['PUT', '/policy', { body: { policy: { default: { approvers: [] } }, reason: 'x' } }, 400, /approvers/],
    ];
    for (const [method, path, options, status, message] of cases) {
      const response = await call(method, path, options);
      const body = (await response.json()) as { error: string };
      expect(response.status, `${method} ${path}`).toBe(status);
      expect(body.error, `${method} ${path}`).toMatch(message);
    }
    // A promotion that breaks the policy is refused (403), changes no version or alias, and is audited.
    const refused = await call('POST', '/models/churn/versions/1/promote', { body: { reason: 'please' } });
    expect(refused.status).toBe(403);
    expect(((await refused.json()) as { error: string; code: string }).code).toBe('PolicyViolation');
    expect(await registry.getVersion('churn', 1)).toEqual(record);
    expect((await registry.readAudit('churn')).map((entry) => entry.action)).toEqual([
      'register',
      'promotion-refused',
    ]);
    // The only new objects are that audit entry.
    const after = await snapshot();
    expect(after.filter((entry) => !before.includes(entry)).map((entry) => entry.split('/')[2])).toEqual([
      'audit',
    ]);
  });

  it('refuses oversized bodies with 413 before reading them, declared or streamed', async () => {
    const { call, url, token, registry } = await start();
    await registry.register(registration('churn'));
    const huge = JSON.stringify({ reason: 'x'.repeat(MAX_REGISTRY_BODY_BYTES) });
    const declared = await call('POST', '/models/churn/versions/1/approve', { raw: huge });
    expect(declared.status).toBe(413);
    // Chunked upload with no content-length: the limit holds on the bytes actually received.
    const chunks = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < 5; i++)
          controller.enqueue(new TextEncoder().encode('x'.repeat(MAX_REGISTRY_BODY_BYTES / 4)));
        controller.close();
      },
    });
    const streamed = await fetch(`${url}/models/churn/versions/1/approve`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: chunks,
      duplex: 'half',
    } as RequestInit);
    expect(streamed.status).toBe(413);
    expect((await registry.getVersion('churn', 1)).approvals).toEqual([]);
  });

  it('reports a tampered artifact as 422 and refuses to archive the champion with 409', async () => {
    const { call, registry, store } = await start();
    const record = await registry.register(registration('churn', { gate: gate(true, null, null) }));
    expect((await call('GET', '/models/churn/versions/1/verify')).status).toBe(200);
    expect((await call('POST', '/models/churn/versions/1/promote', { body: { reason: 'go' } })).status).toBe(
      200,
    );
    const archive = await call('POST', '/models/churn/versions/1/archive', { body: { reason: 'tidy' } });
    expect(archive.status).toBe(409);
    await writeFile(store.pathOf(record.artifacts['transform.json']?.key ?? ''), '{"evil":true}');
    const verify = await call('GET', '/models/churn/versions/1/verify');
    expect(verify.status).toBe(422);
    expect(((await verify.json()) as { error: string }).error).toMatch(
      /transform\.json was modified after registration/,
    );
  });
});
