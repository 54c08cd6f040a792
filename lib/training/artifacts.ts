import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tar from 'tar';
import { ValidationError } from '../core/errors.ts';
import { lakeKeyOf } from '../store/lake-uri.ts';
import type { ObjectStore } from '../store/object-store.ts';

/** The files of a finished training job, unpacked from its model.tar.gz (as SageMaker writes it). */
export async function readModelArtifacts(
  store: ObjectStore,
  modelArtifactsUri: string,
): Promise<Record<string, Buffer>> {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-artifacts-'));
  try {
    const archive = join(dir, 'model.tar.gz');
    await store.getToFile(lakeKeyOf(store, modelArtifactsUri), archive);
    const out = join(dir, 'model');
    await mkdir(out);
    await tar.extract({ file: archive, cwd: out, strict: true });
    const files: Record<string, Buffer> = {};
    for (const name of await readdir(out)) files[name] = await readFile(join(out, name));
    for (const required of ['model.onnx', 'transform.json']) {
      if (!files[required]) {
        throw new ValidationError(
          `the training job wrote no ${required}: a training image must write it to /opt/ml/model`,
        );
      }
    }
    return files;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
