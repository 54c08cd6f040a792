import { z } from 'zod';
import { describeError, ValidationError } from '../core/errors.ts';
import { discardEvents, type EventPublisher } from '../core/events.ts';
import { ModelRegistry } from '../registry/registry.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { parseWindow } from './captures.ts';
import { DriftSettingsSchema } from './drift.ts';
import { runMonitor } from './monitor.ts';
import { computeQuality, hasLabels, type QualityReport } from './quality.ts';
import type { DriftReport } from './report.ts';

/**
 * The monitor job: what the scheduled Lambda (functions/monitoring/monitor.ts) and a local scheduler run.
 * For one model, or for every model's champion on a schedule, it writes a drift report for the recent
 * window and, when labels exist, a quality report, and publishes their events. One model failing (no
 * baseline, say) is recorded and the others still run.
 */

/** Hours of traffic a scheduled run looks back over. */
export const DEFAULT_WINDOW_HOURS = 24;

const VersionSchema = z.union([z.number().int().positive(), z.string().min(1).max(64)]);

/** `{ model }` (optionally version, window, settings), `{}` / `{ all: true }`, or an EventBridge schedule event. */
export const MonitorJobInputSchema = z.union([
  z.strictObject({
    model: z.string().min(1).max(64),
    version: VersionSchema.optional(),
    since: z.string().optional(),
    until: z.string().optional(),
    windowHours: z
      .number()
      .positive()
      .max(24 * 400)
      .optional(),
    settings: DriftSettingsSchema.optional(),
  }),
  z.strictObject({
    all: z.literal(true).optional(),
    windowHours: z
      .number()
      .positive()
      .max(24 * 400)
      .optional(),
    settings: DriftSettingsSchema.optional(),
  }),
  z.looseObject({ source: z.literal('aws.events'), 'detail-type': z.literal('Scheduled Event') }),
]);

/** Options of {@link runMonitorJob}. */
export interface MonitorJobOptions {
  events?: EventPublisher;
  now?: Date;
  /** Look-back of runs that give no `since`. @default DEFAULT_WINDOW_HOURS */
  windowHours?: number;
}

/** What the job did for one model. */
export interface MonitorJobEntry {
  model: string;
  version: number | null;
  drift: DriftReport | null;
  quality: QualityReport | null;
  /** Why this model could not be monitored (the other entries are unaffected). */
  error: string | null;
}

/** What the job did. */
export interface MonitorJobResult {
  startedAt: string;
  window: { since: string | null; until: string | null };
  entries: MonitorJobEntry[];
}

/** Runs the monitor for the models the input names (see {@link MonitorJobInputSchema}). */
export async function runMonitorJob(
  store: ObjectStore,
  input: unknown,
  options: MonitorJobOptions = {},
): Promise<MonitorJobResult> {
  const parsed = MonitorJobInputSchema.safeParse(input ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ValidationError(
      `monitor input must be { model, version?, since?, until? }, {} for every champion, or a schedule event (${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'invalid'})`,
      { cause: parsed.error },
    );
  }
  // A schedule event carries EventBridge's envelope (its `version` is the envelope's): none of it applies.
  const request: {
    model?: string;
    version?: number | string;
    since?: string;
    until?: string;
    windowHours?: number;
    settings?: Record<string, unknown>;
  } = 'source' in parsed.data ? {} : parsed.data;
  const now = options.now ?? new Date();
  const hours = request.windowHours ?? options.windowHours ?? DEFAULT_WINDOW_HOURS;
  const window =
    request.since !== undefined || request.until !== undefined
      ? parseWindow(request.since, request.until)
      : { since: new Date(now.getTime() - hours * 3_600_000), until: now };
  const registry = new ModelRegistry(store);
  const events = options.events ?? discardEvents;
  const models = request.model !== undefined ? [request.model] : await registry.listModels();
  const { version, settings } = request;
  const entries: MonitorJobEntry[] = [];
  for (const model of models) {
    const entry: MonitorJobEntry = { model, version: null, drift: null, quality: null, error: null };
    entries.push(entry);
    try {
      entry.drift = await runMonitor(
        store,
        { model, version, since: window.since, until: window.until, settings },
        { events, now, registry },
      );
      entry.version = entry.drift.version;
      if (await hasLabels(store, model)) {
        entry.quality = await computeQuality(
          store,
          { model, version: entry.drift.version, since: window.since, until: window.until },
          { events, now, registry },
        );
      }
    } catch (error) {
      entry.error = describeError(error);
    }
  }
  return {
    startedAt: now.toISOString(),
    window: { since: window.since?.toISOString() ?? null, until: window.until?.toISOString() ?? null },
    entries,
  };
}

/** A compact result for a Lambda response or a log line: one line per model, plus the report keys. */
export function summarizeMonitorJob(result: MonitorJobResult) {
  return {
    startedAt: result.startedAt,
    window: result.window,
    models: result.entries.map((entry) => ({
      model: entry.model,
      version: entry.version,
      status: entry.error ? 'failed' : (entry.drift?.status ?? 'failed'),
      summary: entry.error ?? entry.drift?.summary ?? '',
      quality: entry.quality?.summary ?? null,
      qualityDropped: entry.quality?.dropped.includes(entry.version ?? -1) ?? false,
      report: entry.drift?.keys.json ?? null,
      html: entry.drift?.keys.html ?? null,
    })),
  };
}
