import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../support/cli.ts';

const DOCKERFILES = [
  'containers/inference/Dockerfile',
  'containers/training/Dockerfile',
  'functions/Dockerfile',
];
const run = promisify(execFile);

// No Docker engine here: the images cannot be built, so their Dockerfiles are linted and their policies checked.
describe('Dockerfiles', () => {
  it.each(DOCKERFILES)('%s passes the Dockerfile linter', async (file) => {
    const linter = join(REPO_ROOT, 'node_modules', '.bin', 'dockerfile-utils');
    const { stdout } = await run(linter, ['lint', join(REPO_ROOT, file)]);
    expect(stdout.trim()).toBe('');
  });

  it.each(DOCKERFILES)('%s pins its base images (no floating latest tags)', async (file) => {
    const text = await readFile(join(REPO_ROOT, file), 'utf8');
    const images = [...text.matchAll(/^ARG \w+_(?:IMAGE|BASE)=(\S+)$/gm)].map((m) => m[1] ?? '');
    expect(images.length).toBeGreaterThan(0);
    for (const image of images) expect(image).toMatch(/:[\w.-]*\d[\w.-]*$/);
  });

  it('the inference image is CUDA 12 + cuDNN 9, installs the CUDA ONNX Runtime and runs as a non-root user', async () => {
    const text = await readFile(join(REPO_ROOT, 'containers/inference/Dockerfile'), 'utf8');
    expect(text).toMatch(/nvidia\/cuda:12\.[\d.]+-cudnn-runtime/);
    expect(text).toContain('--onnxruntime-node-install=cuda12');
    const finalStage = text.slice(text.lastIndexOf('\nFROM '));
    expect(finalStage).toMatch(/^USER (?!root)\w+/m);
  });
});
