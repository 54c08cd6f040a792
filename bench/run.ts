// `npm run bench -- <name> [args…]`: runs one benchmark (or all) as its own process, so each starts cold.
// Benchmarks measure speed and memory; they are never part of `npm test`. Results: bench/README.md.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const BENCHMARKS: Record<string, string> = {
  etl: 'bench/etl-vs-duckdb.ts',
  training: 'bench/train-vs-sklearn.ts',
  inference: 'bench/inference.ts',
};

const [name = 'all', ...args] = process.argv.slice(2);
const selected = name === 'all' ? Object.keys(BENCHMARKS) : [name];
for (const key of selected) {
  const script = BENCHMARKS[key];
  if (!script) {
    process.stderr.write(
      `unknown benchmark ${JSON.stringify(key)}; choose one of: ${Object.keys(BENCHMARKS).join(', ')}, all\n`,
    );
    process.exit(2);
  }
  process.stderr.write(`\n## ${key} (${script})\n`);
  const result = spawnSync(process.execPath, ['--import', 'tsx', script, ...args], {
    cwd: fileURLToPath(new URL('..', import.meta.url)),
    stdio: 'inherit',
  });
  if (result.status !== 0) process.exit(result.status ?? 1);
}
