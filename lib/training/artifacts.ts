import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tar from 'tar';
import { ValidationError } from '../core/errors.ts';
import { lakeKeyOf } from '../store/lake-uri.ts';
import type { ObjectStore } from '../store/object-store.ts';

/**
 * The files of a finished training job, unpacked from its model.tar.gz (as SageMaker writes it). Only files
 * at the top of /opt/ml/model count; folders (checkpoints, caches) stay in the archive. model.onnx is the one
 * file every training image must write.
 */
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
    for (const entry of await readdir(out, { withFileTypes: true })) {
      if (entry.isFile()) files[entry.name] = await readFile(join(out, entry.name));
    }
    if (!files['model.onnx']) {
      const written = Object.keys(files);
      throw new ValidationError(
        `the training job wrote no model.onnx to /opt/ml/model (it wrote ${written.length ? written.join(', ') : 'nothing'}): every training image must write its model there in ONNX`,
      );
    }
    return files;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
