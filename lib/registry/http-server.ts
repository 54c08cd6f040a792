import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { userInfo } from 'node:os';
import { ValidationError } from '../core/errors.ts';
import { handleRegistryRequest, MAX_REGISTRY_BODY_BYTES, type RegistryResponse } from './api.ts';
import { ActorSchema } from './records.ts';
import type { ModelRegistry } from './registry.ts';

export { ensureLocalToken, localTokenPath } from './local-token.ts';

/** Options of {@link createRegistryHttpServer}. */
export interface RegistryHttpServerOptions {
  registry: ModelRegistry;
  /** The bearer token every request must carry (see `ensureLocalToken`). */
  token: string;
  /**
   * Who the audit log names when a request has no `X-Kiln-Actor` header. Locally the token is the trust
   * boundary: whoever holds it may act under any name, as with `kiln models … --as NAME`.
   * @default the operating-system user running the server
   */
  user?: string;
  /** Called with errors that became a 500 (the response never shows them). @default ignore */
  onUnexpected?: (error: unknown) => void;
}

/** A running (or ready-to-run) local registry server. */
export interface RegistryHttpServer {
  readonly server: Server;
  /** Starts listening; the default host is 127.0.0.1 (never all interfaces unless asked). */
  listen(port?: number, host?: string): Promise<AddressInfo>;
  close(): Promise<void>;
}

/**
 * The registry API on node:http for the local platform: the same operations as the Lambda behind API
 * Gateway (`handleRegistryRequest`), authenticated with a bearer token compared in constant time.
 */
export function createRegistryHttpServer(options: RegistryHttpServerOptions): RegistryHttpServer {
  if (options.token.length < 16)
    throw new ValidationError('the registry token must be at least 16 characters');
  const expected = digest(options.token);
  const defaultUser = options.user ?? safeUserName();
  const server = createServer((request, response) => {
    void serve(request, response).catch((error: unknown) => {
      options.onUnexpected?.(error);
      if (!response.headersSent) send(response, { status: 500, body: { error: 'internal error' } });
      else response.destroy();
    });
  });

  async function serve(request: IncomingMessage, response: ServerResponse): Promise<void> {
    if (!authorized(request.headers.authorization, expected)) {
      response.setHeader('www-authenticate', 'Bearer realm="kiln-registry"');
      // Unread bodies of refused requests are discarded, not buffered.
      request.resume();
      send(response, { status: 401, body: { error: 'missing or wrong bearer token' } });
      return;
    }
    const actorHeader = request.headers['x-kiln-actor'];
    const actor = typeof actorHeader === 'string' && actorHeader !== '' ? actorHeader : defaultUser;
    if (!ActorSchema.safeParse(actor).success) {
      request.resume();
      send(response, { status: 400, body: { error: 'X-Kiln-Actor must be 1-256 printable characters' } });
      return;
    }
    const body = await readBody(request);
    if (body === undefined) {
      response.setHeader('connection', 'close');
      response.once('finish', () => request.socket.destroySoon());
      send(response, {
        status: 413,
        body: { error: `request body exceeds ${MAX_REGISTRY_BODY_BYTES} bytes` },
      });
      return;
    }
    const url = new URL(request.url ?? '/', 'http://registry.local');
    const query = Object.fromEntries(url.searchParams.entries());
    const result = await handleRegistryRequest(
      options.registry,
      { method: request.method ?? 'GET', path: url.pathname, body, query, actor },
      options.onUnexpected,
    );
    send(response, result);
  }

  return {
    server,
    listen(port = 0, host = '127.0.0.1') {
      return new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          resolve(server.address() as AddressInfo);
        });
      });
    },
    close() {
      return new Promise((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        server.closeAllConnections();
      });
    },
  };
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}

/** Compares hashes of equal length, so neither the token's content nor its length leaks through timing. */
function authorized(header: string | undefined, expected: Buffer): boolean {
  const match = /^Bearer (\S+)$/i.exec(header ?? '');
  const presented = digest(match?.[1] ?? '');
  return timingSafeEqual(presented, expected) && match !== null;
}

/** The body as text, or undefined as soon as it exceeds the limit (declared or actual). */
function readBody(request: IncomingMessage): Promise<string | undefined> {
  const declared = Number(request.headers['content-length'] ?? 0);
  if (declared > MAX_REGISTRY_BODY_BYTES) return Promise.resolve(undefined);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    request.on('data', (chunk: Buffer) => {
      if (over) return;
      size += chunk.length;
      if (size > MAX_REGISTRY_BODY_BYTES) {
        // Answer now; the rest of the upload is discarded and the connection closed after the answer.
        over = true;
        chunks.length = 0;
        resolve(undefined);
        return;
      }
      chunks.push(chunk);
    });
    request.on('end', () => {
      if (!over) resolve(Buffer.concat(chunks).toString('utf8'));
    });
    request.on('error', reject);
  });
}

function send(response: ServerResponse, result: RegistryResponse): void {
  const text = JSON.stringify(result.body);
  response.writeHead(result.status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  response.end(text);
}

function safeUserName(): string {
  try {
    return userInfo().username || 'local';
  } catch {
    return 'local';
  }
}
