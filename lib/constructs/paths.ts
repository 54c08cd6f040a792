import { fileURLToPath } from 'node:url';

/** Absolute path of the repository root; asset contexts and handler entries are resolved from it. */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/**
 * Docker build-context filter (Docker ignore syntax, applied after `.dockerignore`): an allowlist of what the
 * images build from. Anything else in the working tree (docs, bench, scratch folders, cdk.out, node_modules)
 * stays out of the context, so it neither slows synthesis nor changes the image hashes.
 */
export const DOCKER_CONTEXT_EXCLUDES: readonly string[] = [
  '*',
  '!lib',
  '!functions',
  '!containers',
  '!package.json',
  '!package-lock.json',
  '!.npmrc',
  '!tsconfig.json',
  '**/node_modules',
  '**/*.md',
  '**/*.test.ts',
];
