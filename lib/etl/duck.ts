import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';

/** A DuckDB connection plus a private scratch folder; closed by `withDuckDB`. */
export interface Duck {
  /** Scratch folder for this session (spill files, downloads, outputs); removed afterwards. */
  readonly dir: string;
  /** Runs a statement and returns its rows as plain JSON-friendly values (see `plainValue`). */
  all(sql: string): Promise<Record<string, unknown>[]>;
  /** Runs a statement and ignores its rows. */
  run(sql: string): Promise<void>;
}

/**
 * Opens an in-memory DuckDB, runs `fn`, and always closes it and removes its scratch folder.
 * Spilling goes to the scratch folder (Lambda's cwd is read-only), so large inputs stay out of RAM.
 */
export async function withDuckDB<T>(
  fn: (duck: Duck) => Promise<T>,
  options: { memoryLimit?: string } = {},
): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-etl-'));
  const config: Record<string, string> = { temp_directory: join(dir, 'spill') };
  const memoryLimit = options.memoryLimit ?? process.env.KILN_DUCKDB_MEMORY_LIMIT;
  if (memoryLimit) config.memory_limit = memoryLimit;
  const instance = await DuckDBInstance.create(':memory:', config);
  try {
    const connection = await instance.connect();
    try {
      const duck: Duck = {
        dir,
        async all(sql) {
          const started = performance.now();
          const cpu = process.cpuUsage();
          const reader = await connection.runAndReadAll(sql);
          trace(sql, started, cpu);
          return reader.getRowObjectsJS().map((row) => plainValue(row) as Record<string, unknown>);
        },
        async run(sql) {
          const started = performance.now();
          const cpu = process.cpuUsage();
          await connection.run(sql);
          trace(sql, started, cpu);
        },
      };
      // Timestamps without a zone are read as UTC everywhere, whatever the host's TZ is.
      await duck.run(`SET TimeZone = 'UTC'`).catch(() => undefined);
      return await fn(duck);
    } finally {
      connection.closeSync();
    }
  } finally {
    instance.closeSync();
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * The memory limit of the ETL's DuckDB sessions: `KILN_DUCKDB_MEMORY_LIMIT`, else 60 % of a Lambda function's
 * memory, else 1 GB. DuckDB spills to its scratch folder beyond it, so a shard's (and Finalize's) memory stays
 * flat however big the input; without a limit DuckDB takes up to 80 % of the machine's RAM for buffers
 * (an order-preserving merge of 40 M rows of Parquet peaked at 1.8 GB RSS without it, 0.5 GB with it, as fast).
 */
export function etlMemoryLimit(): string {
  const configured = process.env.KILN_DUCKDB_MEMORY_LIMIT;
  if (configured) return configured;
  const lambdaMb = Number(process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE);
  if (Number.isFinite(lambdaMb) && lambdaMb > 0) return `${Math.floor(lambdaMb * 0.6)}MB`;
  return '1GB';
}

const TRACE = process.env.KILN_TRACE_SQL === '1';

/**
 * With KILN_TRACE_SQL=1, prints each statement's wall time and the process's CPU time meanwhile (DuckDB's
 * threads included) to stderr, for tuning; off by default.
 */
function trace(sql: string, started: number, cpu: NodeJS.CpuUsage): void {
  if (!TRACE) return;
  const used = process.cpuUsage(cpu);
  const cpuMs = Math.round((used.user + used.system) / 1000);
  process.stderr.write(
    `[duckdb ${Math.round(performance.now() - started)} ms, cpu ${cpuMs} ms] ${sql.replace(/\s+/g, ' ').slice(0, 140)}\n`,
  );
}

/** Converts DuckDB's JS values to plain JSON-friendly ones: bigint → number, Date → ISO string. */
export function plainValue(value: unknown): unknown {
  if (typeof value === 'bigint') return Number(value);
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? null : value.toISOString();
  if (value instanceof Uint8Array) return Buffer.from(value).toString('base64');
  if (Array.isArray(value)) return value.map(plainValue);
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [key, inner] of Object.entries(value)) out[key] = plainValue(inner);
    return out;
  }
  return value;
}

/** A SQL string literal; single quotes are doubled, so any path or value is safe to embed. */
export function lit(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

/** A SQL identifier; double quotes are doubled, so any column name is safe to embed. */
export function ident(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** The first row's value of `column`, as a number (0 when absent). */
export function numberOf(rows: Record<string, unknown>[], column: string): number {
  const value = rows[0]?.[column];
  return typeof value === 'number' ? value : Number(value ?? 0);
}
