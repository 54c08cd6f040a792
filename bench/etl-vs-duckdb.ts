/**
 * ETL throughput against DuckDB's own CSV → Parquet copy, on diamonds.csv replicated to N rows.
 *
 *   npx tsx bench/etl-vs-duckdb.ts [--rows 5000000,1000000] [--keep]
 *
 * Each measurement runs in its own child process so that its peak RSS (getrusage maxrss) is its own.
 * Prints a markdown table. Uses ../shared/datasets/diamonds.csv when present, else generates rows.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { lit, withDuckDB } from '../lib/etl/duck.ts';
import { ingestFiles } from '../lib/etl/ingest.ts';
import { runEtl } from '../lib/etl/run.ts';
import { FileSystemStore } from '../lib/store/fs-store.ts';

const DIAMONDS = fileURLToPath(new URL('../../shared/datasets/diamonds.csv', import.meta.url));
const SELF = fileURLToPath(import.meta.url);

interface Measurement {
  seconds: number;
  rows: number;
  peakRssMb: number;
  detail?: string;
}

async function child(): Promise<void> {
  const [phase, input, work] = process.argv.slice(3);
  if (!phase || !input || !work) throw new Error('usage: --child <duckdb|etl> <input.csv> <workdir>');
  const started = performance.now();
  let rows = 0;
  if (phase === 'duckdb') {
    await withDuckDB(async (duck) => {
      const out = await duck.all(
        `COPY (SELECT * FROM read_csv(${lit(input)})) TO ${lit(join(work, 'plain.parquet'))} (FORMAT parquet)`,
      );
      rows = Number(out[0]?.Count ?? 0);
    });
  } else {
    const store = new FileSystemStore(join(work, 'lake'));
    const ingestStarted = performance.now();
    await ingestFiles(store, 'bench', [input]);
    const ingestSeconds = (performance.now() - ingestStarted) / 1000;
    const etlStarted = performance.now();
    const result = await runEtl(store, { dataset: 'bench' });
    const etlSeconds = (performance.now() - etlStarted) / 1000;
    const thousands = (n: number) => n.toLocaleString('en-US');
    // `kiln etl` is what is compared (ingest is its own command); the note gives the ingest time.
    const measurement: Measurement = {
      seconds: etlSeconds,
      rows: result.read,
      peakRssMb: process.resourceUsage().maxRSS / 1024,
      detail: `ingest took ${ingestSeconds.toFixed(1)} s more; accepted ${thousands(result.accepted)}, quarantined ${result.quarantined}, train ${thousands(result.trainRows)}, test ${thousands(result.testRows)}`,
    };
    process.stdout.write(`${JSON.stringify(measurement)}\n`);
    return;
  }
  const measurement: Measurement = {
    seconds: (performance.now() - started) / 1000,
    rows,
    peakRssMb: process.resourceUsage().maxRSS / 1024,
  };
  process.stdout.write(`${JSON.stringify(measurement)}\n`);
}

async function makeInput(rows: number, dir: string): Promise<string> {
  const path = join(dir, `diamonds-${rows}.csv`);
  await withDuckDB(async (duck) => {
    const source = existsSync(DIAMONDS)
      ? `read_csv(${lit(DIAMONDS)})`
      : `(SELECT round(0.2 + random() * 3, 2) AS carat, ['Fair','Good','Very Good','Premium','Ideal'][1 + (i % 5)] AS cut,
           ['D','E','F','G','H','I','J'][1 + (i % 7)] AS color, ['I1','SI2','SI1','VS2','VS1','VVS2','VVS1','IF'][1 + (i % 8)] AS clarity,
           round(55 + random() * 10, 1) AS depth, round(50 + random() * 15) AS "table", (300 + i % 18000)::INTEGER AS price,
           round(random() * 10, 2) AS x, round(random() * 10, 2) AS y, round(random() * 6, 2) AS z FROM range(53940) t(i))`;
    const base = (await duck.all(`SELECT count(*) AS n FROM ${source}`))[0]?.n as number;
    const copies = Math.ceil(rows / base);
    await duck.run(
      `COPY (SELECT d.* FROM ${source} d, range(${copies}) r LIMIT ${rows}) TO ${lit(path)} (FORMAT csv, HEADER true)`,
    );
  });
  return path;
}

function run(phase: 'duckdb' | 'etl', input: string, work: string): Measurement {
  const out = execFileSync(process.execPath, ['--import', 'tsx', SELF, '--child', phase, input, work], {
    encoding: 'utf8',
    maxBuffer: 1 << 20,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const last = out.trim().split('\n').pop() ?? '{}';
  return JSON.parse(last) as Measurement;
}

async function main(): Promise<void> {
  const flag = process.argv.indexOf('--rows');
  const sizes = (flag > 0 ? (process.argv[flag + 1] ?? '') : '5000000')
    .split(',')
    .map((s) => Number(s))
    .filter((n) => n > 0);
  const dir = await mkdtemp(join(tmpdir(), 'kiln-bench-etl-'));
  const lines = [
    '| rows | input MB | engine | seconds | rows/s | MB/s | peak RSS MB | ratio to DuckDB | notes |',
    '|---:|---:|---|---:|---:|---:|---:|---:|---|',
  ];
  try {
    for (const rows of sizes) {
      const input = await makeInput(rows, dir);
      const mb = (await stat(input)).size / 2 ** 20;
      const work = await mkdtemp(join(dir, 'work-'));
      const duck = run('duckdb', input, work);
      const etl = run('etl', input, work);
      const row = (name: string, m: Measurement, ratio: string) =>
        `| ${m.rows.toLocaleString('en-US')} | ${mb.toFixed(0)} | ${name} | ${m.seconds.toFixed(1)} | ${Math.round(m.rows / m.seconds).toLocaleString('en-US')} | ${(mb / m.seconds).toFixed(1)} | ${m.peakRssMb.toFixed(0)} | ${ratio} | ${m.detail ?? ''} |`;
      lines.push(row('DuckDB COPY read_csv → Parquet', duck, '1.00'));
      lines.push(
        row(
          'kiln ETL: plan + validate/quarantine/split + finalize/profile',
          etl,
          (duck.seconds / etl.seconds).toFixed(2),
        ),
      );
      await rm(work, { recursive: true, force: true });
      await rm(input, { force: true });
    }
  } finally {
    if (!process.argv.includes('--keep')) await rm(dir, { recursive: true, force: true });
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}

if (process.argv[2] === '--child') await child();
else await main();
