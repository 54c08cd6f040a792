import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { REGISTRY_ROUTES, registryOpenApi } from '../../lib/registry/api.ts';
import { REPO_ROOT } from '../support/cli.ts';

const DOC = join(REPO_ROOT, 'docs', 'registry-openapi.json');

interface OpenApi {
  paths: Record<
    string,
    Record<
      string,
      {
        operationId: string;
        requestBody?: { content: Record<string, { schema: unknown }> };
        responses: Record<string, { content?: Record<string, { schema: { $ref?: string } }> }>;
      }
    >
  >;
  components: { schemas: Record<string, unknown> };
}

describe('registry OpenAPI document', () => {
  it('docs/registry-openapi.json is what the code generates (regenerate: npx kiln models openapi > docs/registry-openapi.json)', async () => {
    const stored = JSON.parse(await readFile(DOC, 'utf8')) as unknown;
    expect(stored).toEqual(JSON.parse(JSON.stringify(registryOpenApi())));
  });

  it('documents every route once, with the request schema that validates it and resolvable responses', () => {
    const doc = registryOpenApi() as unknown as OpenApi;
    const operations = Object.entries(doc.paths).flatMap(([path, methods]) =>
      Object.entries(methods).map(([method, operation]) => ({ path, method, operation })),
    );
    expect(operations.map((o) => `${o.method.toUpperCase()} ${o.path}`).sort()).toEqual(
      REGISTRY_ROUTES.map((route) => `${route.method} ${route.path}`).sort(),
    );
    expect(new Set(operations.map((o) => o.operation.operationId)).size).toBe(REGISTRY_ROUTES.length);
    for (const route of REGISTRY_ROUTES) {
      const operation = doc.paths[route.path]?.[route.method.toLowerCase()];
      const schema = operation?.requestBody?.content['application/json']?.schema;
      if (route.body) {
        const { $schema: _dialect, ...expected } = z.toJSONSchema(route.body, {
          target: 'openapi-3.0',
          io: 'input',
          unrepresentable: 'any',
        }) as Record<string, unknown>;
        expect(schema, route.operationId).toEqual(expected);
      } else {
        expect(schema, route.operationId).toBeUndefined();
      }
      for (const response of Object.values(operation?.responses ?? {})) {
        const ref = response.content?.['application/json']?.schema.$ref ?? '';
        expect(
          doc.components.schemas[ref.replace('#/components/schemas/', '')],
          `${route.operationId} ${ref}`,
        ).toBeDefined();
      }
    }
  });
});
