import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { IntegrityError, ValidationError } from '../../lib/core/errors.ts';
import { LocalEventBus } from '../../lib/local/event-bus.ts';
import { openHome } from '../../lib/local/home.ts';
import { resolveIntrinsics, taskStates } from '../../lib/local/template.ts';
import { tempDir } from '../support/temp.ts';

describe('openHome', () => {
  it('creates a home once and reopens it', async () => {
    const dir = join(await tempDir(), 'home');
    const home = await openHome(dir);
    expect(JSON.parse(await readFile(join(dir, 'kiln.json'), 'utf8'))).toMatchObject({ kind: 'kiln.home' });
    const again = await openHome(dir);
    expect(again.lakeDir).toBe(home.lakeDir);
  });

  it('refuses a corrupt marker and a non-empty folder that is not a home, without touching them', async () => {
    const corrupt = await tempDir();
    await writeFile(join(corrupt, 'kiln.json'), '{not json');
    await expect(openHome(corrupt)).rejects.toBeInstanceOf(IntegrityError);
    expect(await readFile(join(corrupt, 'kiln.json'), 'utf8')).toBe('{not json');

    const foreign = await tempDir();
    await mkdir(join(foreign, 'photos'));
    await expect(openHome(foreign)).rejects.toBeInstanceOf(ValidationError);
  });
});

describe('LocalEventBus', () => {
  it('delivers events that match source and detail-type patterns, and logs every event', async () => {
    const log = join(await tempDir(), 'events.jsonl');
    const bus = new LocalEventBus(log);
    const seen: string[] = [];
    bus.subscribe({ source: ['kiln.registry'], detailType: ['AliasMoved'] }, (event) => {
      seen.push(String(event.detail.alias));
    });
    await bus.publish([
      { source: 'kiln.registry', detailType: 'AliasMoved', detail: { alias: 'champion' } },
      { source: 'kiln.registry', detailType: 'ModelVersionRegistered', detail: {} },
      { source: 'kiln.etl', detailType: 'AliasMoved', detail: { alias: 'wrong-source' } },
    ]);
    await bus.drain();
    expect(seen).toEqual(['champion']);
    expect((await readFile(log, 'utf8')).trim().split('\n')).toHaveLength(3);
  });
});

describe('template resolution', () => {
  const template = {
    Resources: {
      PlanFn: { Type: 'AWS::Lambda::Function', Properties: {} },
    },
  };

  it('resolves Fn::Join, Ref and Fn::GetAtt to local placeholders', () => {
    const value = {
      'Fn::Join': [
        '',
        [
          '{"Resource":"arn:',
          { Ref: 'AWS::Partition' },
          ':x","Fn":"',
          { 'Fn::GetAtt': ['PlanFn', 'Arn'] },
          '"}',
        ],
      ],
    };
    expect(JSON.parse(String(resolveIntrinsics(value, template)))).toEqual({
      Resource: 'arn:aws:x',
      Fn: 'arn:aws:lambda:us-east-1:000000000000:function:PlanFn',
    });
  });

  it('finds Task states nested in Map and Parallel states', () => {
    const tasks = taskStates({
      StartAt: 'A',
      States: {
        A: { Type: 'Task', Resource: 'r' },
        M: { Type: 'Map', ItemProcessor: { StartAt: 'B', States: { B: { Type: 'Task', Resource: 'r' } } } },
        P: { Type: 'Parallel', Branches: [{ StartAt: 'C', States: { C: { Type: 'Task', Resource: 'r' } } }] },
      },
    });
    expect([...tasks.keys()].sort()).toEqual(['A', 'B', 'C']);
  });
});

describe('Fn::Sub', () => {
  it('substitutes pseudo parameters, attributes and explicit variables', () => {
    const template = { Resources: { Fn1: { Type: 'AWS::Lambda::Function' } } };
    // biome-ignore lint/suspicious/noTemplateCurlyInString: this is CloudFormation's Fn::Sub syntax, not JS
    const value = { 'Fn::Sub': ['${AWS::AccountId}.dkr/${Fn1.Arn}:${Tag}', { Tag: { Ref: 'AWS::Region' } }] };
    expect(resolveIntrinsics(value, template)).toBe(
      '000000000000.dkr/arn:aws:lambda:us-east-1:000000000000:function:Fn1:us-east-1',
    );
  });
});
