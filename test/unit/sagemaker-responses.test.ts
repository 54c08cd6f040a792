import { describe, expect, it } from 'vitest';
import type { ModelOutput } from '../../lib/ml/types.ts';
import {
  predictionsCsv,
  predictionsJson,
  predictionsJsonOf,
  predictionsOf,
} from '../../lib/serving/sagemaker.ts';

const classification: ModelOutput = {
  task: 'binary',
  nRows: 3,
  labels: Int32Array.of(1, 0, 1),
  probabilities: Float32Array.of(0.25, 0.75, 0.9983870387077332, 0.0016129612922668457, Number.NaN, 1),
} as ModelOutput;

describe('/invocations response bodies', () => {
  it('the direct JSON writer gives the same text as JSON.stringify of the prediction objects', () => {
    for (const classes of [
      ['nonspam', 'spam'],
      ['say "no"', 'back\\slash\nnewline'],
    ]) {
      const text = predictionsJsonOf(classification, classes);
      expect(text).toBe(predictionsJson(predictionsOf(classification, classes)));
      expect(JSON.parse(text).predictions[1].label).toBe(classes[0]);
    }
    const regression = {
      task: 'regression',
      nRows: 3,
      values: Float32Array.of(1.5, -0, Number.POSITIVE_INFINITY),
    } as ModelOutput;
    expect(predictionsJsonOf(regression, [])).toBe(predictionsJson(predictionsOf(regression, [])));
    expect(predictionsJsonOf(regression, [])).toBe(
      '{"predictions":[{"value":1.5},{"value":0},{"value":null}]}',
    );
    expect(predictionsJsonOf({ task: 'binary', nRows: 0 } as ModelOutput, ['a', 'b'])).toBe(
      '{"predictions":[]}',
    );
  });

  it('CSV: label then per-class probabilities, quoted when needed, one line per row', () => {
    expect(predictionsCsv(classification, ['a,b', 'c'])).toBe(
      'c,0.25,0.75\n"a,b",0.9983870387077332,0.0016129612922668457\nc,NaN,1\n',
    );
  });
});
