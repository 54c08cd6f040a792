import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeError, KilnError, NotFoundError } from '../core/errors.ts';
import { EventTypes, type KilnEvent } from '../core/events.ts';
import { LocalPlatform, REPO_ROOT } from '../local/platform.ts';
import { rng as mulberry32 } from '../ml/split.ts';
import { ingestLabels } from '../monitoring/labels.ts';
import { type DriftReport, runMonitor } from '../monitoring/monitor.ts';
import { RegistryModelSource } from '../registry/model-source.ts';
import { parseCsv } from '../serving/csv.ts';
import { silentLogger } from '../serving/model-host.ts';
import { createInferenceServer, type InferenceServer } from '../serving/server.ts';
import { readTrainingConfig, recordTrainingConfig } from './config.ts';
import { startLocalAutomation } from './local.ts';
import type { RolloutOutcome } from './local-rollout.ts';
import { listRetrainingRuns, type RetrainingRunRecord } from './retraining.ts';

/**
 * `kiln demo drift`: the whole model-update loop on the bundled churn data, end to end and for real —
 * shifted data lands, the server's traffic shows the shift, the monitor reports drift, the events start
 * one (debounced) retraining run, the gate decides, and a canary on the live server promotes the
 * challenger or rolls it back. Every step goes through the same code as `kiln up`, `kiln monitor` and the
 * AWS handlers; only the window is closed early instead of waited out.
 */

/** The bundled data set, its target and the model `kiln up` trains on it. */
const SAMPLE = join(REPO_ROOT, 'examples', 'data', 'churn.csv');
const DATASET = 'churn';
const TARGET = 'churn';

/** One line of the drill's timeline. */
export interface TimelineEntry {
  /** Seconds since the drill started. */
  at: number;
  step: string;
  text: string;
}

/** What `kiln demo drift --json` prints. */
export interface DrillResult {
  home: string;
  model: string;
  timeline: TimelineEntry[];
  /** Every event on the bus during the drill. */
  events: Array<{ at: number; source: string; detailType: string; summary: string }>;
  drift: {
    status: DriftReport['status'];
    summary: string;
    driftedFeatures: string[];
    predictionDrift: boolean;
    requests: number;
    rows: number;
    reportKey: string;
    htmlKey: string;
  };
  /** The retraining runs the drill's events started, with the events that caused each. */
  runs: Array<
    Pick<RetrainingRunRecord, 'runId' | 'status' | 'reason' | 'datasetVersion'> & {
      causes: string[];
      version: number | null;
    }
  >;
  gate: Record<string, unknown> | null;
  canary: {
    status: RolloutOutcome['status'] | 'none';
    mode: string | null;
    champion: number | null;
    challenger: number | null;
    reasons: string[];
    checks: Array<{ name: string; status: string; detail: string }>;
    traffic: unknown;
  };
  champion: number | null;
  seconds: number;
}

/** Options of {@link runDriftDrill}. */
export interface DrillOptions {
  home: string;
  /** Progress lines for people (stderr). */
  log?: (line: string) => void;
  /** Rows of the shifted batch that lands. @default 1500 */
  batchRows?: number;
}

/** Runs the drill (see the module comment). */
export async function runDriftDrill(options: DrillOptions): Promise<DrillResult> {
  const started = performance.now();
  const at = () => Number(((performance.now() - started) / 1000).toFixed(1));
  const timeline: TimelineEntry[] = [];
  const note = (step: string, text: string) => {
    const entry = { at: at(), step, text };
    timeline.push(entry);
    options.log?.(`+${entry.at.toFixed(1).padStart(5)}s  ${step.padEnd(9)} ${text}`);
  };
  const platform = await LocalPlatform.open({ home: options.home });
  const events: DrillResult['events'] = [];
  const offEvents = platform.bus.subscribe({}, (event) => {
    const summary = summarizeEvent(event);
    events.push({ at: at(), source: event.source, detailType: event.detailType, summary });
    if (SHOWN.has(event.detailType)) note('event', `${event.detailType}: ${summary}`);
  });
  const work = await mkdtemp(join(tmpdir(), 'kiln-drill-'));
  let server: InferenceServer | undefined;
  try {
    const model = await ensureLoop(platform, note);
    const championBefore = (await platform.registry.readAliases(model)).aliases.champion ?? null;

    server = createInferenceServer({
      source: new RegistryModelSource(platform.registry),
      models: [model],
      capture: { store: platform.store, sampleRate: 1, flushIntervalMs: 0 },
      logger: silentLogger,
    });
    const address = await server.listen(0, '127.0.0.1');
    const url = `http://127.0.0.1:${address.port}`;
    const inference = server;
    platform.bus.subscribe(
      { source: ['kiln.registry'], detailType: [EventTypes.aliasMoved] },
      async (event) => {
        if (event.detail.alias === 'champion') await inference.onAliasMoved(event).catch(() => undefined);
      },
    );
    note('serve', `${model}@${server.models.get(model).version} on ${url} (capture on)`);

    const labelsDir = join(work, 'labels');
    // (request id, true label) of the canary's traffic: the late labels that arrive before the decision.
    const canaryLabels: Array<[string, string]> = [];
    const automation = startLocalAutomation(platform, {
      server,
      log: (line) => {
        const [step = '', ...rest] = line.split(' ');
        if (step !== 'rollout') note(step, rest.join(' '));
      },
      rollout: {
        settings: { mode: 'canary', share: 0.25, bakeRequests: 120, maxBakeMs: 300_000 },
        beforeDecision: async (bake) => {
          const file = `${labelsDir}-${bake.challenger}.csv`;
          const lines = canaryLabels.map(([id, label]) => `${id},${label}`);
          await writeFile(file, `requestId,label\n${lines.join('\n')}\n`);
          const ingest = await ingestLabels(platform.store, model, file, {
            capturesSince: bake.since,
            events: platform.bus,
          });
          note(
            'labels',
            `${ingest.accepted} late labels for the canary's traffic arrive (${ingest.matched} matched captured requests)`,
          );
        },
      },
    });

    // 1. A shifted batch lands in raw/: the landing starts the ETL, the new version the retraining window.
    const seed = 42 + (await platform.store.list(`raw/${DATASET}/`)).length;
    const batch = shiftedRows(options.batchRows ?? 1500, seed);
    const file = join(work, 'churn-shifted.csv');
    await writeFile(file, toCsv(batch.rows));
    const landing = await platform.ingest([file], DATASET);
    note(
      'land',
      `${batch.rows.length} shifted rows → ${landing.objects[0]?.key ?? 'raw/'} (${batch.description})`,
    );
    await automation.idle();

    // 2. Live traffic with the same shift goes through the server and is captured.
    const trafficStart = new Date();
    const traffic = shiftedRows(600, seed + 1000).rows.map(features);
    let sent = 0;
    for (let i = 0; i < traffic.length; i += 5) {
      await predict(url, model, traffic.slice(i, i + 5));
      sent++;
    }
    await server.capture?.flush();
    note(
      'traffic',
      `${traffic.length} rows in ${sent} requests to ${model}@${server.models.get(model).version}`,
    );

    // 3. The monitor compares the captured traffic with the training baseline; drift is an event.
    const report = await runMonitor(platform.store, { model, since: trafficStart }, { events: platform.bus });
    note('monitor', `${report.summary} → ${report.keys.html}`);
    await automation.idle();

    // 4. The window closes (early, for the drill): one retraining run for every event in it.
    note(
      'window',
      'closing the retraining window now instead of waiting it out (the drill does not wait 10 minutes)',
    );
    await automation.flush();
    const executed = new Set(automation.sfn.list().map((execution) => execution.name));
    const runs = (await listRetrainingRuns(platform.store, model)).filter((run) => executed.has(run.runId));
    for (const run of runs) {
      note(
        'retrain',
        `${run.runId}: ${run.status} — ${run.reason} [caused by ${run.causes.map((cause) => cause.detailType).join(', ') || 'nothing recorded'}]`,
      );
    }
    const trained = runs.find((run) => run.status === 'trained');
    const gate = trained?.gate ?? null;
    if (gate) note('gate', String(gate.reason ?? (gate.passed ? 'passed' : 'failed')));

    // 5. A challenger that passed the gate is on a canary: send traffic until it has baked.
    const rollout = automation.rollouts.at(-1);
    let outcome: RolloutOutcome | undefined;
    if (rollout) {
      if (rollout.router) {
        note(
          'canary',
          `${model}@${rollout.challenger} answers ${rollout.router.snapshot().share * 100} % of requests until it has answered 120`,
        );
        const rows = shiftedRows(2000, seed + 2000).rows;
        let baked = false;
        void rollout.router.baked.then(() => {
          baked = true;
        });
        for (let i = 0; i < rows.length && !baked; i += 8) {
          await Promise.all(
            rows.slice(i, i + 8).map(async (row) => {
              const id = await predict(url, model, [features(row)]);
              if (id) canaryLabels.push([id, String(row[TARGET])]);
            }),
          );
        }
      }
      outcome = await rollout.done;
      const checks = outcome.decision?.checks ?? [];
      note(
        'decision',
        `${outcome.status}: ${checks.map((check) => `${check.name} ${check.status}`).join(', ') || outcome.reasons.join('; ')}`,
      );
      for (const check of checks) note('  check', `${check.name} ${check.status}: ${check.detail}`);
    } else {
      note('canary', 'no challenger to roll out (nothing passed the gate)');
    }
    await automation.stop();
    for (const error of automation.errors) note('error', error);
    const championAfter = (await platform.registry.readAliases(model)).aliases.champion ?? null;
    note(
      'champion',
      `${model}@${championBefore} → ${model}@${championAfter}; serving ${server.models.get(model).version}`,
    );

    return {
      home: platform.home.dir,
      model,
      timeline,
      events,
      drift: {
        status: report.status,
        summary: report.summary,
        driftedFeatures: report.drift.driftedFeatures,
        predictionDrift: report.drift.predictionDrift,
        requests: report.traffic.requests,
        rows: report.traffic.rows,
        reportKey: report.keys.json,
        htmlKey: report.keys.html,
      },
      runs: runs.map((run) => ({
        runId: run.runId,
        status: run.status,
        reason: run.reason,
        datasetVersion: run.datasetVersion,
        causes: run.causes.map((cause) => cause.detailType),
        version: typeof run.registration?.version === 'number' ? run.registration.version : null,
      })),
      gate,
      canary: {
        status: outcome?.status ?? 'none',
        mode: outcome?.mode ?? null,
        champion: outcome?.champion ?? null,
        challenger: outcome?.challenger ?? null,
        reasons: outcome?.reasons ?? [],
        checks: outcome?.decision?.checks ?? [],
        traffic: outcome?.evaluation?.traffic ?? null,
      },
      champion: championAfter,
      seconds: at(),
    };
  } finally {
    offEvents();
    await server?.close();
    await platform.bus.drain();
    await rm(work, { recursive: true, force: true });
  }
}

/** The drill needs the loop `kiln up` runs: a churn champion with a training config. */
async function ensureLoop(
  platform: LocalPlatform,
  note: (step: string, text: string) => void,
): Promise<string> {
  const model = DATASET;
  const models = await platform.registry.listModels();
  if (!models.includes(model)) {
    note('bootstrap', `no ${model} model in this home: running the kiln up loop first (ingest, ETL, train)`);
    await platform.ingest([SAMPLE], DATASET);
    await platform.etl(DATASET);
    await platform.train({ dataset: DATASET, target: TARGET, model });
    await platform.bus.drain();
  }
  const champion = await platform.registry.resolve(model);
  if (!(await readTrainingConfig(platform.store, model))) {
    // A home from before training configs existed: derive it from the champion's lineage.
    await recordTrainingConfig(platform.store, {
      model,
      dataset: champion.lineage.dataset,
      target: champion.target,
      algorithm: champion.lineage.algorithm,
      hyperparameters: {},
      seed: champion.lineage.seed,
      gateMargin: 0,
      version: champion.version,
      trainingJob: champion.lineage.trainingJob,
    });
  }
  note(
    'home',
    `${platform.home.dir}: ${model}@${champion.version} is champion (${champion.lineage.dataset}@${champion.lineage.datasetVersion})`,
  );
  return model;
}

type Row = Record<string, unknown>;

/**
 * Rows of the bundled churn data resampled with a shift: a new unlimited-day offer adds an hour of day
 * minutes (charges follow the tariff), and the international plan goes from about one customer in ten to
 * almost half. The churn labels stay the customers' own, so the new relationship is learnable.
 */
export function shiftedRows(n: number, seed: number): { rows: Row[]; description: string } {
  const source = sampleRows();
  const random = mulberry32(seed);
  const rows: Row[] = [];
  for (let i = 0; i < n; i++) {
    const row = { ...(source[Math.floor(random() * source.length)] as Row) };
    const minutes = Number(row.total_day_minutes) + 60;
    row.total_day_minutes = Number(minutes.toFixed(1));
    row.total_day_charge = Number((minutes * 0.17).toFixed(2));
    if (random() < 0.4) row.international_plan = 'yes';
    rows.push(row);
  }
  return {
    rows,
    description: 'total_day_minutes +60, total_day_charge follows, international_plan "yes" ~10 % → ~45 %',
  };
}

let cachedSample: Row[] | undefined;

function sampleRows(): Row[] {
  if (cachedSample) return cachedSample;
  const table = parseCsv(readFileSync(SAMPLE, 'utf8'), 1_000_000_000);
  const header = (table[0] ?? []).map(String);
  if (!header.includes(TARGET)) throw new NotFoundError(`${SAMPLE} has no ${TARGET} column`);
  cachedSample = table.slice(1).map((fields) => {
    const row: Row = {};
    header.forEach((name, i) => {
      const value = fields[i];
      const number =
        value === null || value === undefined || value.trim() === '' ? Number.NaN : Number(value);
      row[name] = Number.isFinite(number) ? number : value;
    });
    return row;
  });
  return cachedSample;
}

function features(row: Row): Row {
  const { [TARGET]: _target, ...rest } = row;
  return rest;
}

function toCsv(rows: Row[]): string {
  const header = Object.keys(rows[0] ?? {});
  const cell = (value: unknown) =>
    typeof value === 'string' ? `"${value.replace(/"/g, '""')}"` : String(value);
  return `${[header.join(','), ...rows.map((row) => header.map((name) => cell(row[name])).join(','))].join('\n')}\n`;
}

/** One prediction request; resolves with the server's request id (null on a failed request). */
async function predict(url: string, model: string, instances: Row[]): Promise<string | null> {
  try {
    const response = await fetch(`${url}/invocations?model=${model}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ instances }),
    });
    await response.arrayBuffer();
    return response.ok ? response.headers.get('x-kiln-request-id') : null;
  } catch (error) {
    throw new KilnError(`the drill's request to ${url} failed: ${describeError(error)}`, 'DrillFailed', {
      cause: error,
    });
  }
}

const SHOWN = new Set<string>([
  EventTypes.rawObjectCreated,
  EventTypes.etlRunSucceeded,
  EventTypes.driftDetected,
  EventTypes.modelVersionRegistered,
  EventTypes.aliasMoved,
  EventTypes.retrainingRunCompleted,
  EventTypes.rolloutStarted,
  EventTypes.rolloutCompleted,
  EventTypes.labelsIngested,
]);

/** One line per event, for the timeline and `--json`. */
export function summarizeEvent(event: KilnEvent): string {
  const d = event.detail as Record<string, unknown>;
  switch (event.detailType) {
    case EventTypes.rawObjectCreated:
      return String((d.object as { key?: unknown } | undefined)?.key ?? '');
    case EventTypes.etlRunSucceeded:
      return `${String(d.dataset)}@${String(d.version)}: ${String(d.accepted)} rows curated, ${String(d.quarantined)} quarantined`;
    case EventTypes.driftDetected:
      return `${String(d.model)}@${String(d.version)}: ${String(d.driftedFeatureCount)} drifted feature(s) (${(d.driftedFeatures as string[] | undefined)?.slice(0, 4).join(', ') ?? ''})${d.predictionDrift ? ', prediction drift' : ''}`;
    case EventTypes.modelVersionRegistered:
      return `${String(d.model)}@${String(d.version)} registered (${String(d.stage)})`;
    case EventTypes.aliasMoved:
      return `${String(d.model)} ${String(d.alias)}: ${String(d.previous ?? '-')} → ${String(d.version ?? '-')}`;
    case EventTypes.retrainingRunCompleted:
      return `${String(d.runId)} ${String(d.status)}`;
    case EventTypes.rolloutStarted:
      return `${String(d.model)}@${String(d.challenger)} ${String(d.mode)} against @${String(d.champion)}`;
    case EventTypes.rolloutCompleted:
      return `${String(d.model)}@${String(d.challenger)} ${String(d.decision)}`;
    case EventTypes.labelsIngested:
      return `${String(d.accepted)} labels, ${String(d.matched)} matched`;
    default:
      return `${String(d.model ?? d.dataset ?? '')}${d.version !== undefined ? `@${String(d.version)}` : ''}`;
  }
}
