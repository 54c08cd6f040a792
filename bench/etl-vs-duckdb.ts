/**
 * `kiln etl` against DuckDB's own CSV → Parquet copy, on diamonds.csv replicated to N rows.
 *
 *   npx tsx bench/etl-vs-duckdb.ts [--rows 1000000,5000000] [--repeat 5] [--big 2] [--keep]
 *
 * Kiln's side is the real `kiln etl` path: a LocalPlatform (the lake in a folder) executing the synthesized
 * ETL state machine — Plan (contract inference on first data), ProcessShards (Distributed Map of
 * ProcessShard: validate, quarantine, split, write Parquet), Finalize (commit the version, profile). DuckDB's
 * side is `COPY (SELECT * FROM read_csv(...)) TO ... (FORMAT parquet)` on the same file. Each measurement runs
 * in its own child process, so that its peak RSS (getrusage maxrss) and CPU time are its own; the two sides
 * alternate within each repetition (the machine may be shared: medians are reported, and the ratio of the
 * medians). `kiln ingest` runs in a child of its own before each `kiln etl` (ingest is a separate command);
 * its time is noted. `--big GB` adds one run of each side on a CSV of at least that many gigabytes.
 *
 * Prints a markdown table. Uses ../shared/datasets/diamonds.csv when present, else generates rows.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { lit, withDuckDB } from '../lib/etl/duck.ts';
import type { FinalizeResult } from '../lib/etl/finalize.ts';
import type { EtlPlan } from '../lib/etl/plan.ts';
import { LocalPlatform } from '../lib/local/platform.ts';

const DIAMONDS = fileURLToPath(new URL('../../shared/datasets/diamonds.csv', import.meta.url));
const SELF = fileURLToPath(import.meta.url);

interface Measurement {
  seconds: number;
  cpuSeconds: number;
  rows: number;
  peakRssMb: number;
  /** kiln etl only: seconds per state, the CLI's fixed start-up (synthesizing the template), shards. */
  states?: Record<string, number>;
  startupSeconds?: number;
  shards?: number;
  accepted?: number;
  quarantined?: number;
}

function finish(
  started: number,
  cpuBefore: NodeJS.CpuUsage,
  rows: number,
  extra: Partial<Measurement> = {},
): void {
  const cpu = process.cpuUsage(cpuBefore);
  const measurement: Measurement = {
    seconds: (performance.now() - started) / 1000,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    rows,
    peakRssMb: process.resourceUsage().maxRSS / 1024,
    ...extra,
  };
  process.stdout.write(`${JSON.stringify(measurement)}\n`);
}

async function child(): Promise<void> {
  const [phase, input, work] = process.argv.slice(3);
  if (!phase || !input || !work) throw new Error('usage: --child <duckdb|ingest|etl> <input.csv> <workdir>');
  if (phase === 'duckdb') {
    const cpuBefore = process.cpuUsage();
    const started = performance.now();
    let rows = 0;
    await withDuckDB(async (duck) => {
      const out = await duck.all(
        `COPY (SELECT * FROM read_csv(${lit(input)})) TO ${lit(join(work, 'plain.parquet'))} (FORMAT parquet)`,
      );
      rows = Number(out[0]?.Count ?? 0);
    });
    finish(started, cpuBefore, rows);
    return;
  }
  const home = join(work, 'home');
  if (phase === 'ingest') {
    const cpuBefore = process.cpuUsage();
    const started = performance.now();
    const platform = await LocalPlatform.open({ home });
    await platform.ingest([input], 'bench');
    finish(started, cpuBefore, 0);
    return;
  }
  // `kiln etl --dataset bench`: open the platform, synthesize the template, load the ETL state machine
  // (validating its definition: once per process, as Step Functions validates at creation) and the handlers
  // (tsx compiles them on first import): per-process constants, like DuckDB's own load on the other side.
  // Then time the execution of the state machine.
  const startupBegan = performance.now();
  const entered = new Map<string, number>();
  const states: Record<string, number> = {};
  const platform = await LocalPlatform.open({
    home,
    onProgress: ({ state, phase: event }) => {
      if (event === 'entered' && !entered.has(state)) entered.set(state, performance.now());
      if (event === 'exited') states[state] = (performance.now() - (entered.get(state) ?? 0)) / 1000;
    },
  });
  (await platform.pipelines()).prepare('Plan');
  for (const handler of ['plan', 'shard', 'finalize']) await import(`../functions/etl/${handler}.ts`);
  const startupSeconds = (performance.now() - startupBegan) / 1000;
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  const output = await platform.etl('bench');
  const result = output.result as FinalizeResult;
  finish(started, cpuBefore, result.read, {
    states,
    startupSeconds,
    shards: (output.plan as EtlPlan).shards.length,
    accepted: result.accepted,
    quarantined: result.quarantined,
  });
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

function run(phase: 'duckdb' | 'ingest' | 'etl', input: string, work: string): Measurement {
  const out = execFileSync(process.execPath, ['--import', 'tsx', SELF, '--child', phase, input, work], {
    encoding: 'utf8',
    maxBuffer: 1 << 20,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const last = out.trim().split('\n').pop() ?? '{}';
  return JSON.parse(last) as Measurement;
}

/** One pair of measurements: DuckDB's copy and `kiln ingest` + `kiln etl` on a fresh lake. */
async function pair(input: string, dir: string, kilnFirst: boolean) {
  const work = await mkdtemp(join(dir, 'work-'));
  try {
    let duck: Measurement | undefined;
    if (!kilnFirst) duck = run('duckdb', input, work);
    const ingest = run('ingest', input, work);
    const etl = run('etl', input, work);
    duck ??= run('duckdb', input, work);
    return { duck, ingest, etl };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? (sorted[mid] ?? 0) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

function flag(name: string): string | undefined {
  const at = process.argv.indexOf(name);
  return at > 0 ? process.argv[at + 1] : undefined;
}

async function main(): Promise<void> {
  const sizes = (flag('--rows') ?? '1000000,5000000')
    .split(',')
    .map(Number)
    .filter((n) => n > 0);
  const repeat = Math.max(1, Number(flag('--repeat') ?? 5));
  const bigGb = Number(flag('--big') ?? 0);
  const dir = await mkdtemp(join(tmpdir(), 'kiln-bench-etl-'));
  const lines = [
    '| rows | input MB | engine | runs | seconds (median) | rows/s | MB/s | CPU s | peak RSS MB | ratio to DuckDB | notes |',
    '|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|',
  ];
  const thousands = (n: number) => Math.round(n).toLocaleString('en-US');
  const row = (rows: number, mb: number, name: string, ms: Measurement[], ratio: string, notes: string) => {
    const seconds = median(ms.map((m) => m.seconds));
    return `| ${thousands(rows)} | ${mb.toFixed(0)} | ${name} | ${ms.length} | ${seconds.toFixed(2)} | ${thousands(rows / seconds)} | ${(mb / seconds).toFixed(1)} | ${median(ms.map((m) => m.cpuSeconds)).toFixed(1)} | ${median(ms.map((m) => m.peakRssMb)).toFixed(0)} | ${ratio} | ${notes} |`;
  };
  try {
    const plan: { rows: number; runs: number; big: boolean }[] = sizes.map((rows) => ({
      rows,
      runs: repeat,
      big: false,
    }));
    // diamonds.csv replicated: about 48 bytes a row.
    if (bigGb > 0) plan.push({ rows: Math.ceil((bigGb * 2 ** 30) / 47.6), runs: 1, big: true });
    for (const { rows, runs, big } of plan) {
      const input = await makeInput(rows, dir);
      const mb = (await stat(input)).size / 2 ** 20;
      process.stderr.write(`${thousands(rows)} rows, ${mb.toFixed(0)} MB: ${runs} run(s)\n`);
      const pairs = [];
      for (let i = 0; i < runs; i++) {
        const measured = await pair(input, dir, i % 2 === 1);
        process.stderr.write(
          `  run ${i + 1}: duckdb ${measured.duck.seconds.toFixed(2)} s, kiln etl ${measured.etl.seconds.toFixed(2)} s (ingest ${measured.ingest.seconds.toFixed(2)} s)\n`,
        );
        pairs.push(measured);
      }
      const duck = pairs.map((p) => p.duck);
      const etl = pairs.map((p) => p.etl);
      const ratio = median(duck.map((m) => m.seconds)) / median(etl.map((m) => m.seconds));
      const paired = median(pairs.map((p) => p.duck.seconds / p.etl.seconds));
      // `kiln etl` as a command also synthesizes the CDK template and loads its handlers: a constant per call.
      const withStartup = median(
        pairs.map((p) => p.duck.seconds / (p.etl.seconds + (p.etl.startupSeconds ?? 0))),
      );
      const state = (name: string) => median(etl.map((m) => m.states?.[name] ?? 0)).toFixed(2);
      const first = etl[0];
      lines.push(
        row(rows, mb, 'DuckDB `COPY read_csv → Parquet`', duck, '1.00', big ? '2 GB-class input' : ''),
      );
      lines.push(
        row(
          rows,
          mb,
          '`kiln etl` (state machine: plan, validate/quarantine/split, finalize/profile)',
          etl,
          `**${ratio.toFixed(2)}** (paired ${paired.toFixed(2)})`,
          `${first?.shards ?? 1} shard(s); Plan ${state('Plan')} s, ProcessShards ${state('ProcessShards')} s, Finalize ${state('Finalize')} s; start-up ${median(etl.map((m) => m.startupSeconds ?? 0)).toFixed(2)} s (ratio with it ${withStartup.toFixed(2)}); accepted ${thousands(first?.accepted ?? 0)}, quarantined ${first?.quarantined ?? 0}; \`kiln ingest\` ${median(pairs.map((p) => p.ingest.seconds)).toFixed(1)} s, ${median(pairs.map((p) => p.ingest.peakRssMb)).toFixed(0)} MB`,
        ),
      );
      if (!process.argv.includes('--keep')) await rm(input, { force: true });
    }
  } finally {
    if (!process.argv.includes('--keep')) await rm(dir, { recursive: true, force: true });
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}

if (process.argv[2] === '--child') await child();
else await main();
