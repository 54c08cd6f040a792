/**
 * An HTTP shim that sits in front of s3rver and adds the two S3 write guarantees s3rver 3.7.1 lacks.
 *
 * Why it exists (verified against s3rver 3.7.1 before writing it, see `lib/controllers/object.js` and
 * `lib/stores/filesystem.js` in the package):
 *  1. Conditional writes. s3rver's PutObject / CompleteMultipartUpload ignore `If-None-Match` and `If-Match`:
 *     a create-only PUT over an existing key and a PUT with a wrong etag both answer 200 and overwrite.
 *     Amazon S3 (since Aug/Nov 2024) answers `If-None-Match: *` on an existing key with 412
 *     PreconditionFailed, `If-Match: <etag>` with 412 when the etag differs and 404 NoSuchKey when the
 *     key is missing, and only accepts `*` for If-None-Match on writes.
 *  2. Atomic objects. s3rver writes an object in place (`createWriteStream` on the final path, then a
 *     separate `.md5` sidecar) and serves GET as `stat` + a second open of the same path, so a GET racing a
 *     PUT returns a mix of two versions, a body shorter than its Content-Length, or an ETag of the other
 *     version. Amazon S3 never exposes a partial object: a GET sees the old object or the new one.
 *  3. Read-after-write. s3rver answers a PUT when its hashing stream finishes, before the file write stream
 *     has flushed, so even a strictly sequential PUT-then-GET sometimes returns an empty or stale body
 *     (8 of 2,000 pairs when this was written). Amazon S3 acknowledges a write only once it is readable.
 *
 * What it does, and nothing else: requests that write an object (PutObject, CopyObject into the key,
 * CompleteMultipartUpload, DeleteObject) hold an exclusive per-key lock for their whole exchange; requests
 * that read an object (GetObject, HeadObject) hold a shared per-key lock until their body has been sent.
 * Under the exclusive lock a conditional write is checked against a HEAD sent straight to s3rver and,
 * when the condition fails, answered with S3's own XML error body. A successful object write is answered
 * only after s3rver serves bytes whose MD5 equals the ETag it reported (the write has landed). Everything else — bucket operations,
 * listings, UploadPart, the headers and bodies of forwarded requests — passes through untouched, so
 * SigV4 signatures still verify inside s3rver.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, request, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** A running shim; `endpoint` is what S3 clients should talk to. */
export interface S3WriteSemanticsShim {
  readonly endpoint: string;
  close(): Promise<void>;
}

/** Query parameters that address a sub-resource of an object rather than its bytes. */
const SUBRESOURCES = new Set([
  'acl',
  'attributes',
  'legal-hold',
  'partNumber',
  'restore',
  'retention',
  'select',
  'tagging',
  'torrent',
  'uploadId',
  'uploads',
]);

type Access = 'read' | 'write' | 'none';

/** Starts the shim on 127.0.0.1 (ephemeral port) in front of the s3rver listening at `upstream`. */
export async function startS3WriteSemanticsShim(upstream: {
  host: string;
  port: number;
}): Promise<S3WriteSemanticsShim> {
  const locks = new KeyLocks();
  const server = createServer((req, res) => {
    handle(req, res, upstream, locks).catch((error: unknown) => {
      if (!res.headersSent)
        sendError(res, 500, 'InternalError', `shim failure: ${String(error)}`, req.url ?? '');
      else res.destroy();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        server.closeAllConnections();
      }),
  };
}

async function handle(
  req: IncomingMessage,
  res: ServerResponse,
  upstream: { host: string; port: number },
  locks: KeyLocks,
): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://shim.invalid');
  const [, bucket = '', ...keyParts] = url.pathname.split('/');
  const key = keyParts.map((part) => decodeURIComponent(part)).join('/');
  const access = classify(req.method ?? 'GET', url.searchParams, key);
  if (access === 'none') {
    forward(req, res, upstream, () => undefined);
    return;
  }
  const release = await locks.acquire(`${bucket}/${key}`, access);
  let released = false;
  const releaseOnce = (): void => {
    if (!released) {
      released = true;
      release();
    }
  };
  try {
    if (access === 'write' && isConditionalWrite(req, url.searchParams)) {
      const refusal = await checkWriteConditions(req, upstream, url.pathname);
      if (refusal) {
        // Drain the body the client is already sending so it reads the refusal on a healthy connection.
        req.resume();
        await new Promise<void>((resolve) => (req.readableEnded ? resolve() : req.once('end', resolve)));
        sendError(res, refusal.status, refusal.code, refusal.message, url.pathname, refusal.extra);
        releaseOnce();
        return;
      }
    }
    const landed =
      access === 'write' && req.method !== 'DELETE'
        ? () => waitUntilReadable(upstream, url.pathname)
        : undefined;
    forward(req, res, upstream, releaseOnce, landed);
  } catch (error) {
    releaseOnce();
    throw error;
  }
}

function classify(method: string, query: URLSearchParams, key: string): Access {
  if (key === '') return 'none';
  const subresource = [...query.keys()].some((name) => SUBRESOURCES.has(name));
  if (method === 'GET' || method === 'HEAD') return subresource ? 'none' : 'read';
  if (method === 'PUT') return subresource ? 'none' : 'write';
  if (method === 'DELETE') return query.has('uploadId') ? 'none' : 'write';
  // POST ?uploadId=… is CompleteMultipartUpload; POST ?uploads creates one and touches no object.
  if (method === 'POST' && query.has('uploadId')) return 'write';
  return 'none';
}

function isConditionalWrite(req: IncomingMessage, query: URLSearchParams): boolean {
  const writesBytes = req.method === 'PUT' || (req.method === 'POST' && query.has('uploadId'));
  return writesBytes && (req.headers['if-none-match'] !== undefined || req.headers['if-match'] !== undefined);
}

interface Refusal {
  status: number;
  code: string;
  message: string;
  extra?: Record<string, string>;
}

/** Evaluates If-None-Match / If-Match the way S3 documents them for PutObject and CompleteMultipartUpload. */
async function checkWriteConditions(
  req: IncomingMessage,
  upstream: { host: string; port: number },
  objectPath: string,
): Promise<Refusal | undefined> {
  const ifNoneMatch = header(req, 'if-none-match');
  const ifMatch = header(req, 'if-match');
  if (ifNoneMatch !== undefined && ifNoneMatch !== '*') {
    return {
      status: 501,
      code: 'NotImplemented',
      message: 'A header you provided implies functionality that is not implemented',
      extra: { Header: 'If-None-Match' },
    };
  }
  const current = await headUpstream(upstream, objectPath);
  if (ifNoneMatch === '*' && current.exists) {
    return preconditionFailed('If-None-Match');
  }
  if (ifMatch !== undefined) {
    if (!current.exists) {
      return { status: 404, code: 'NoSuchKey', message: 'The specified key does not exist.' };
    }
    if (ifMatch !== '*' && unquote(ifMatch) !== unquote(current.etag)) return preconditionFailed('If-Match');
  }
  return undefined;
}

function preconditionFailed(condition: string): Refusal {
  return {
    status: 412,
    code: 'PreconditionFailed',
    message: 'At least one of the pre-conditions you specified did not hold',
    extra: { Condition: condition },
  };
}

/** An unsigned HEAD straight to s3rver (which allows anonymous access); the caller holds the key's exclusive lock. */
function headUpstream(
  upstream: { host: string; port: number },
  objectPath: string,
): Promise<{ exists: true; etag: string } | { exists: false }> {
  return new Promise((resolve, reject) => {
    const head = request(
      { host: upstream.host, port: upstream.port, method: 'HEAD', path: objectPath },
      (response) => {
        response.resume();
        if (response.statusCode === 404) resolve({ exists: false });
        else if (response.statusCode === 200 && typeof response.headers.etag === 'string') {
          resolve({ exists: true, etag: response.headers.etag });
        } else reject(new Error(`HEAD ${objectPath} answered ${response.statusCode} without a usable ETag`));
      },
    );
    head.on('error', reject);
    head.end();
  });
}

function forward(
  req: IncomingMessage,
  res: ServerResponse,
  upstream: { host: string; port: number },
  done: () => void,
  beforeSuccess?: () => Promise<void>,
): void {
  const proxied = request(
    { host: upstream.host, port: upstream.port, method: req.method, path: req.url, headers: req.headers },
    (response) => {
      const status = response.statusCode ?? 502;
      const settled = beforeSuccess && status >= 200 && status < 300 ? beforeSuccess() : Promise.resolve();
      settled.then(
        () => {
          res.writeHead(status, response.headers);
          response.pipe(res);
        },
        (error: unknown) => {
          response.resume();
          sendError(res, 500, 'InternalError', String(error), req.url ?? '');
        },
      );
    },
  );
  // 'close' fires once the response is fully sent or the client went away; either way the exchange is over.
  res.once('close', () => {
    proxied.destroy();
    done();
  });
  proxied.on('error', (error) => {
    if (!res.headersSent)
      sendError(res, 502, 'InternalError', `s3rver unreachable: ${error.message}`, req.url ?? '');
    else res.destroy(error);
  });
  req.pipe(proxied);
}

/**
 * Polls s3rver (the caller holds the key's exclusive lock) until the object it serves hashes to the ETag it
 * reports, i.e. until the write it just acknowledged has reached its file.
 */
async function waitUntilReadable(
  upstream: { host: string; port: number },
  objectPath: string,
): Promise<void> {
  for (let attempt = 1; attempt <= 400; attempt++) {
    const current = await getUpstream(upstream, objectPath).catch(() => undefined);
    if (current && `"${createHash('md5').update(current.body).digest('hex')}"` === current.etag) return;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  throw new Error(`s3rver never served a complete copy of ${objectPath}`);
}

function getUpstream(
  upstream: { host: string; port: number },
  objectPath: string,
): Promise<{ etag: string; body: Buffer } | undefined> {
  return new Promise((resolve, reject) => {
    const get = request(
      { host: upstream.host, port: upstream.port, method: 'GET', path: objectPath },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('error', reject);
        response.on('end', () => {
          const etag = response.headers.etag;
          resolve(
            response.statusCode === 200 && typeof etag === 'string'
              ? { etag, body: Buffer.concat(chunks) }
              : undefined,
          );
        });
      },
    );
    // A truncated body can leave s3rver's response hanging; give up on this attempt and poll again.
    get.setTimeout(2_000, () => get.destroy(new Error(`GET ${objectPath} stalled`)));
    get.on('error', reject);
    get.end();
  });
}

function sendError(
  res: ServerResponse,
  status: number,
  code: string,
  message: string,
  resource: string,
  extra: Record<string, string> = {},
): void {
  const fields = {
    Code: code,
    Message: message,
    ...extra,
    Resource: resource,
    RequestId: randomBytes(8).toString('hex'),
  };
  const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error>${Object.entries(fields)
    .map(([name, value]) => `<${name}>${escapeXml(value)}</${name}>`)
    .join('')}</Error>`;
  res.writeHead(status, { 'Content-Type': 'application/xml', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

function header(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value.join(',') : value;
}

function unquote(etag: string): string {
  return etag
    .trim()
    .replace(/^W\//, '')
    .replace(/^"(.*)"$/, '$1');
}

function escapeXml(value: string): string {
  return value.replace(/[<>&'"]/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

/** Per-key readers–writer locks, granted in arrival order so a stream of readers cannot starve a writer. */
class KeyLocks {
  private readonly states = new Map<string, { readers: number; writer: boolean; queue: Waiter[] }>();

  acquire(key: string, mode: 'read' | 'write'): Promise<() => void> {
    let state = this.states.get(key);
    if (!state) {
      state = { readers: 0, writer: false, queue: [] };
      this.states.set(key, state);
    }
    const current = state;
    return new Promise((resolve) => {
      current.queue.push({ mode, grant: () => resolve(() => this.release(key, mode)) });
      this.drain(key);
    });
  }

  private release(key: string, mode: 'read' | 'write'): void {
    const state = this.states.get(key);
    if (!state) return;
    if (mode === 'write') state.writer = false;
    else state.readers--;
    this.drain(key);
  }

  private drain(key: string): void {
    const state = this.states.get(key);
    if (!state) return;
    for (let next = state.queue[0]; next; next = state.queue[0]) {
      if (next.mode === 'write' ? state.writer || state.readers > 0 : state.writer) break;
      state.queue.shift();
      if (next.mode === 'write') state.writer = true;
      else state.readers++;
      next.grant();
    }
    if (!state.writer && state.readers === 0 && state.queue.length === 0) this.states.delete(key);
  }
}

interface Waiter {
  mode: 'read' | 'write';
  grant: () => void;
}
