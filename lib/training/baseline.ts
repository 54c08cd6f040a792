import { type ColumnProfile, profileColumn } from '../core/profile.ts';
import type { InputColumn } from '../core/transform.ts';
import type { ModelOutput, Task } from '../ml/train.ts';

type Row = Record<string, unknown>;

/** The drift baseline saved as baseline.json: raw input columns and the held-out prediction distribution. */
export interface BaselineProfile {
  features: Record<string, ColumnProfile>;
  prediction: ColumnProfile;
}

/** Profiles every raw input column over the training rows, and the model's held-out predictions. */
export function baselineProfile(
  inputs: ReadonlyArray<Pick<InputColumn, 'name' | 'type'>>,
  trainRows: ReadonlyArray<Row>,
  heldOut: Pick<ModelOutput, 'labels' | 'values'>,
  task: Task,
  classes: ReadonlyArray<string>,
): BaselineProfile {
  const features: Record<string, ColumnProfile> = {};
  for (const input of inputs) {
    const kind = input.type === 'number' || input.type === 'integer' ? 'numeric' : 'categorical';
    features[input.name] = profileColumn(
      trainRows.map((row) => row[input.name]),
      kind,
    );
  }
  const prediction =
    task === 'regression'
      ? profileColumn(Array.from(heldOut.values ?? []), 'numeric')
      : profileColumn(
          Array.from(heldOut.labels ?? [], (label) => classes[label]),
          'categorical',
        );
  return { features, prediction };
}
