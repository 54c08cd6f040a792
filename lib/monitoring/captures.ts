import { z } from 'zod';
import { NotFoundError, ValidationError } from '../core/errors.ts';
import { lake } from '../store/layout.ts';
import type { ObjectStore } from '../store/object-store.ts';

/**
 * Reading request/response capture (lib/serving/capture.ts) back for monitoring: one object per flushed
 * partition, `capture/<model>/<version>/<yyyy>/<mm>/<dd>/<hh>/<uuid>.jsonl`, one record per line. Nothing
 * here trusts the files: a bad line is counted and listed, never fatal, because capture is best effort and
 * may come from other writers.
 */

/** A time window over captured requests: `since` inclusive, `until` exclusive; either may be open. */
export interface TimeWindow {
  since?: Date;
  until?: Date;
}

/** One valid capture record. */
export interface CapturedRequest {
  requestId: string;
  time: Date;
  model: string;
  version: string;
  inputs: unknown[];
  outputs: unknown[];
  /** Where it was read from (lake key, 1-based line). */
  key: string;
  line: number;
}

/** A capture line that could not be used, for the report. */
export interface InvalidCapture {
  key: string;
  line: number;
  reason: string;
}

/** What reading captures ran into; filled in while records are read. */
export interface CaptureReadStats {
  /** Objects read (after pruning by the window). */
  files: number;
  /** Valid records inside the window. */
  records: number;
  /** Records that were not JSON or not capture records. */
  invalidRecords: number;
  /** Records filed under another model or version than their own fields say. */
  misfiledRecords: number;
  /** The first few invalid or misfiled records, with the reason. */
  invalidExamples: InvalidCapture[];
  /** Earliest and latest request time seen inside the window (ISO). */
  firstRequest: string | null;
  lastRequest: string | null;
}

const MAX_EXAMPLES = 10;
/** Past this many days the day-by-day listing costs more requests than one listing of the version. */
const MAX_DAYS_LISTED_SEPARATELY = 62;

const CaptureLineSchema = z.looseObject({
  requestId: z.string().min(1),
  time: z.string().refine((value) => !Number.isNaN(Date.parse(value)), 'time must be an ISO-8601 date'),
  model: z.string().min(1),
  version: z.union([z.string().min(1), z.number()]).transform(String),
  inputs: z.array(z.unknown()),
  outputs: z.array(z.unknown()),
});

/** Empty read statistics. */
export function emptyReadStats(): CaptureReadStats {
  return {
    files: 0,
    records: 0,
    invalidRecords: 0,
    misfiledRecords: 0,
    invalidExamples: [],
    firstRequest: null,
    lastRequest: null,
  };
}

/** Parses `since`/`until` given as Date, ISO string or undefined; ValidationError when unreadable or inverted. */
export function parseWindow(since?: Date | string | null, until?: Date | string | null): TimeWindow {
  const parse = (value: Date | string | null | undefined, name: string): Date | undefined => {
    if (value === undefined || value === null || value === '') return undefined;
    const date = value instanceof Date ? value : new Date(value);
    if (Number.isNaN(date.getTime())) {
      throw new ValidationError(
        `${name} must be an ISO-8601 date or time, got ${JSON.stringify(String(value))}`,
      );
    }
    return date;
  };
  const window: TimeWindow = {};
  const s = parse(since, 'since');
  const u = parse(until, 'until');
  if (s) window.since = s;
  if (u) window.until = u;
  if (s && u && s.getTime() >= u.getTime()) {
    throw new ValidationError(`since (${s.toISOString()}) must be before until (${u.toISOString()})`);
  }
  return window;
}

/** Capture object keys of one model version whose hour partition overlaps the window, sorted. */
export async function listCaptureKeys(
  store: ObjectStore,
  model: string,
  version: number | string,
  window: TimeWindow = {},
): Promise<string[]> {
  const prefix =
    typeof version === 'number' ? lake.capturePrefix(model, version) : `capture/${model}/${version}/`;
  let keys: string[];
  const { since, until } = window;
  const days = since ? daysBetween(since, until ?? new Date()) : undefined;
  if (since && days !== undefined && days.length <= MAX_DAYS_LISTED_SEPARATELY) {
    keys = [];
    for (const day of days) keys.push(...(await store.list(`${prefix}${day}/`)).map((info) => info.key));
  } else {
    keys = (await store.list(prefix)).map((info) => info.key);
  }
  return keys
    .filter((key) => key.endsWith('.jsonl'))
    .filter((key) => {
      const hour = partitionHour(key, prefix);
      // Keys outside the layout are read anyway: the records' own times decide.
      if (hour === undefined) return true;
      const end = hour.getTime() + 3_600_000;
      return (!since || end > since.getTime()) && (!until || hour.getTime() < until.getTime());
    })
    .sort();
}

/**
 * Reads the valid capture records of one model version inside the window, file by file (memory stays
 * bounded by one file); invalid lines are counted in `stats`.
 */
export async function* readCaptures(
  store: ObjectStore,
  model: string,
  version: number | string,
  window: TimeWindow,
  stats: CaptureReadStats,
): AsyncGenerator<CapturedRequest> {
  const keys = await listCaptureKeys(store, model, version, window);
  for (const key of keys) {
    let body: string;
    try {
      body = (await store.get(key)).toString('utf8');
    } catch (error) {
      // An object expiring between list and get is not an error of the monitor.
      if (error instanceof NotFoundError) continue;
      throw error;
    }
    stats.files++;
    const lines = body.split('\n');
    for (let i = 0; i < lines.length; i++) {
      const text = (lines[i] as string).trim();
      if (text === '') continue;
      const line = i + 1;
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        invalid(stats, { key, line, reason: 'not valid JSON' });
        continue;
      }
      const parsed = CaptureLineSchema.safeParse(json);
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        invalid(stats, {
          key,
          line,
          reason: `not a capture record: ${issue?.path.join('.') || '(root)'} ${issue?.message ?? 'invalid'}`,
        });
        continue;
      }
      const record = parsed.data;
      if (record.model !== model || record.version !== String(version)) {
        stats.misfiledRecords++;
        if (stats.invalidExamples.length < MAX_EXAMPLES) {
          stats.invalidExamples.push({
            key,
            line,
            reason: `record of ${record.model}@${record.version} filed under ${model}@${version}; skipped`,
          });
        }
        continue;
      }
      const time = new Date(record.time);
      if (window.since && time < window.since) continue;
      if (window.until && time >= window.until) continue;
      stats.records++;
      const iso = time.toISOString();
      if (stats.firstRequest === null || iso < stats.firstRequest) stats.firstRequest = iso;
      if (stats.lastRequest === null || iso > stats.lastRequest) stats.lastRequest = iso;
      yield {
        requestId: record.requestId,
        time,
        model: record.model,
        version: record.version,
        inputs: record.inputs,
        outputs: record.outputs,
        key,
        line,
      };
    }
  }
}

function invalid(stats: CaptureReadStats, example: InvalidCapture): void {
  stats.invalidRecords++;
  if (stats.invalidExamples.length < MAX_EXAMPLES) stats.invalidExamples.push(example);
}

const pad = (n: number) => String(n).padStart(2, '0');

/** `yyyy/mm/dd` of every UTC day from `since` to `until` (inclusive of both ends' days). */
function daysBetween(since: Date, until: Date): string[] {
  const days: string[] = [];
  const day = new Date(Date.UTC(since.getUTCFullYear(), since.getUTCMonth(), since.getUTCDate()));
  while (day.getTime() < until.getTime() && days.length <= MAX_DAYS_LISTED_SEPARATELY) {
    days.push(`${day.getUTCFullYear()}/${pad(day.getUTCMonth() + 1)}/${pad(day.getUTCDate())}`);
    day.setUTCDate(day.getUTCDate() + 1);
  }
  return days;
}

/** Start of the hour partition a capture key is filed under, or undefined for keys outside the layout. */
function partitionHour(key: string, prefix: string): Date | undefined {
  const match = /^(\d{4})\/(\d{2})\/(\d{2})\/(\d{2})\/[^/]+$/.exec(key.slice(prefix.length));
  if (!match) return undefined;
  const [, y, m, d, h] = match;
  return new Date(Date.UTC(Number(y), Number(m) - 1, Number(d), Number(h)));
}
