import { readFile, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runKiln } from '../support/cli.ts';
import { tempDir } from '../support/temp.ts';

/** A failed command prints exactly one line on stderr, names the problem, and exits non-zero. */
function expectOneLineError(result: { code: number; stderr: string }, pattern: RegExp) {
  expect(result.code).not.toBe(0);
  const lines = result.stderr
    .trim()
    .split('\n')
    .filter((line) => line.startsWith('kiln:'));
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(pattern);
  expect(result.stderr).not.toMatch(/\n\s+at /); // no stack trace
}

describe('kiln CLI bad input', () => {
  it('a missing file', async () => {
    const home = join(await tempDir(), 'h');
    const result = await runKiln(['up', '--once', '--home', home, '--data', 'no/such.csv', '--target', 'x']);
    expectOneLineError(result, /file not found: no\/such\.csv/);
  });

  it('an empty CSV', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'empty.csv'), '');
    const result = await runKiln([
      'ingest',
      join(dir, 'empty.csv'),
      '--dataset',
      'e',
      '--home',
      join(dir, 'h'),
    ]);
    expectOneLineError(result, /empty/i);
  });

  it('a target column that does not exist, leaving the registry empty', async () => {
    const dir = await tempDir();
    const csv = join(dir, 'small.csv');
    await writeFile(csv, `a,b\n${Array.from({ length: 40 }, (_, i) => `${i},${i % 3}`).join('\n')}\n`);
    const home = join(dir, 'h');
    const result = await runKiln([
      'up',
      '--once',
      '--home',
      home,
      '--port',
      '0',
      '--data',
      csv,
      '--target',
      'nope',
    ]);
    expectOneLineError(result, /target column "nope".*columns are a, b/);
    const models = await runKiln(['models', 'list', '--json', '--home', home]);
    expect(JSON.parse(models.stdout)).toEqual([]);
  });

  it('a port in use, before any work is done', async () => {
    const server: Server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    const port = (server.address() as { port: number }).port;
    try {
      const home = join(await tempDir(), 'h');
      const result = await runKiln(['up', '--once', '--home', home, '--port', String(port)]);
      expectOneLineError(result, new RegExp(`port ${port} is in use`));
    } finally {
      server.close();
    }
  });

  it('a corrupt home, left untouched', async () => {
    const home = await tempDir();
    await writeFile(join(home, 'kiln.json'), 'garbage');
    const result = await runKiln(['models', 'list', '--home', home]);
    expectOneLineError(result, /corrupt/);
    expect(await readFile(join(home, 'kiln.json'), 'utf8')).toBe('garbage');
  });

  it('invalid options and unknown models', async () => {
    const home = join(await tempDir(), 'h');
    expect((await runKiln(['up', '--port', '99999', '--home', home])).code).toBe(2);
    expectOneLineError(
      await runKiln(['up', '--once', '--home', home, '--data', 'x.csv']),
      /--data needs --target/,
    );
    expectOneLineError(
      await runKiln(['models', 'show', 'ghost', '--home', home]),
      /model ghost does not exist/,
    );
    expectOneLineError(await runKiln(['models', 'show', 'Bad!', '--home', home]), /invalid model name/);
  });

  it('--help works on every command', async () => {
    for (const command of [
      [],
      ['up'],
      ['ingest'],
      ['etl'],
      ['train'],
      ['models'],
      ['models', 'show'],
      ['serve'],
      ['predict'],
    ]) {
      const result = await runKiln([...command, '--help']);
      expect(result.code, command.join(' ')).toBe(0);
      expect(result.stdout).toMatch(/Usage: kiln/);
    }
  });
});
