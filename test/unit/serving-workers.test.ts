import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { countGpus, defaultWorkerCount } from '../../lib/serving/cluster.ts';
import { tempDir } from '../support/temp.ts';

/** A /dev with these device files. */
async function devWith(names: string[]): Promise<string> {
  const dir = await tempDir();
  for (const name of names) await writeFile(join(dir, name), '');
  return dir;
}

describe('default worker count', () => {
  it('is one per GPU on CUDA and one per vCPU otherwise', () => {
    expect(defaultWorkerCount({ cuda: true, gpus: 1, cpus: 4 }).workers).toBe(1);
    expect(defaultWorkerCount({ cuda: true, gpus: 4, cpus: 48 }).workers).toBe(4);
    // CUDA forced on a host whose devices cannot be counted: still one worker, not none.
    expect(defaultWorkerCount({ cuda: true, gpus: 0, cpus: 8 }).workers).toBe(1);
    expect(defaultWorkerCount({ cuda: false, gpus: 1, cpus: 4 })).toEqual({
      workers: 4,
      reason: 'one per vCPU (4)',
    });
  });

  it('counts GPU device files, not the control devices every GPU container has', async () => {
    const dev = await devWith(['nvidia0', 'nvidia1', 'nvidiactl', 'nvidia-uvm', 'nvidia-uvm-tools', 'null']);
    expect(countGpus({}, dev)).toBe(2);
    expect(countGpus({ NVIDIA_VISIBLE_DEVICES: 'all' }, dev)).toBe(2);
    expect(countGpus({}, await devWith(['null', 'zero']))).toBe(0);
    expect(countGpus({}, join(dev, 'missing'))).toBe(0);
  });

  it('follows NVIDIA_VISIBLE_DEVICES when it lists devices', async () => {
    const dev = await devWith(['nvidia0', 'nvidia1', 'nvidia2', 'nvidia3']);
    expect(countGpus({ NVIDIA_VISIBLE_DEVICES: '0,2' }, dev)).toBe(2);
    expect(countGpus({ NVIDIA_VISIBLE_DEVICES: 'GPU-6f2d1c3a-8a5e-4b7e-9c1d-2e3f4a5b6c7d' }, dev)).toBe(1);
    expect(countGpus({ NVIDIA_VISIBLE_DEVICES: 'none' }, dev)).toBe(0);
    expect(countGpus({ NVIDIA_VISIBLE_DEVICES: 'void' }, dev)).toBe(0);
  });
});
