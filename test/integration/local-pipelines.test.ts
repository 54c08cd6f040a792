import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LocalPipelines, PipelineFailedError, type StateProgress } from '../../lib/local/pipeline-runner.ts';
import { LocalPlatform, REPO_ROOT } from '../../lib/local/platform.ts';
import { type CfnTemplate, resolveIntrinsics, stateMachineDefinitions } from '../../lib/local/template.ts';
import { synthesizePlatformTemplate } from '../../lib/stacks/synth.ts';
import { tempDir } from '../support/temp.ts';

const SAMPLE = join(REPO_ROOT, 'examples', 'data', 'churn.csv');

describe('local pipelines are the synthesized pipelines', () => {
  const template = synthesizePlatformTemplate() as unknown as CfnTemplate;

  it('executes exactly the DefinitionString of each synthesized state machine', async () => {
    const pipelines = new LocalPipelines({ template, rootDir: REPO_ROOT });
    const machines = Object.entries(template.Resources).filter(
      ([, r]) => r.Type === 'AWS::StepFunctions::StateMachine',
    );
    expect(machines.length).toBeGreaterThanOrEqual(2);
    for (const startAt of ['Plan', 'Prepare']) {
      const { logicalId, definition } = pipelines.definitionStartingAt(startAt);
      const synthesized = template.Resources[logicalId]?.Properties?.DefinitionString;
      expect(definition).toEqual(JSON.parse(String(resolveIntrinsics(synthesized, template))));
    }
  });

  it('runs the ETL state machine through the synthesized states and handlers', async () => {
    const states: StateProgress[] = [];
    const platform = await LocalPlatform.open({
      home: join(await tempDir(), 'home'),
      onProgress: (p) => states.push(p),
    });
    await platform.ingest([SAMPLE], 'churn');
    const output = await platform.etl('churn');
    const entered = states.filter((s) => s.phase === 'entered').map((s) => s.state);
    expect(entered).toEqual(['Plan', 'ProcessShards', 'ProcessShard', 'Finalize', expect.any(String)]);
    const etlDefinition = [...stateMachineDefinitions(template).values()].find((d) => d.StartAt === 'Plan');
    for (const state of entered.filter((name) => name !== 'ProcessShard')) {
      expect(Object.keys(etlDefinition?.States ?? {})).toContain(state);
    }
    expect(output.result).toMatchObject({ dataset: 'churn', read: 5000 });
  });

  it('follows a changed template: the runner has no copy of its own', async () => {
    const platform = await LocalPlatform.open({ home: join(await tempDir(), 'home') });
    await platform.ingest([SAMPLE], 'churn');
    const changed = structuredClone(template);
    const [logicalId, definition] =
      [...stateMachineDefinitions(changed)].find(([, d]) => d.StartAt === 'Plan') ?? [];
    if (!logicalId || !definition) throw new Error('no ETL state machine');
    // Route Finalize through an extra Pass state: only a runner that executes the template will pass through it.
    const finalize = definition.States.Finalize;
    if (!finalize) throw new Error('no Finalize state');
    definition.States.Marker = {
      Type: 'Pass',
      Result: 'changed',
      ResultPath: '$.marker',
      Next: String(finalize.Next),
    };
    finalize.Next = 'Marker';
    const resource = changed.Resources[logicalId];
    if (resource?.Properties) resource.Properties.DefinitionString = JSON.stringify(definition);
    const pipelines = new LocalPipelines({ template: changed, rootDir: REPO_ROOT });
    const output = await pipelines.run('etl', 'Plan', { dataset: 'churn' });
    expect(output.marker).toBe('changed');
  });

  it('reports a failing task with its error name, as Step Functions does', async () => {
    const platform = await LocalPlatform.open({ home: join(await tempDir(), 'home') });
    const pipelines = await platform.pipelines();
    const failure = await pipelines
      .run('etl', 'Plan', { dataset: 'nothing-here' })
      .catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(PipelineFailedError);
    expect((failure as PipelineFailedError).message).toMatch(/nothing-here/);
  });
});
