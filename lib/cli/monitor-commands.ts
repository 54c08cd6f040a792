import type { Command } from 'commander';
import { ValidationError } from '../core/errors.ts';
import { LocalPlatform } from '../local/platform.ts';
import { formatNumber } from '../monitoring/drift.ts';
import { ingestLabels, type LabelIngestResult } from '../monitoring/labels.ts';
import { type DriftReport, runMonitor } from '../monitoring/monitor.ts';
import { computeQuality, hasLabels, type QualityReport } from '../monitoring/quality.ts';
import { parseModelReference } from '../registry/registry.ts';

interface Globals {
  home: string;
  json?: boolean;
}

/**
 * `kiln monitor` (drift and, when labels exist, quality of a model version's captured traffic) and
 * `kiln labels ingest` (late ground truth), on the local platform's lake and bus.
 */
export function addMonitorCommands(program: Command): void {
  program
    .command('monitor')
    .description(
      'compare a model version’s captured traffic with its training baseline (drift) and its labels (quality)',
    )
    .requiredOption('--model <ref>', 'NAME, NAME@VERSION or NAME@ALIAS (default: the champion)')
    .option('--since <time>', 'only traffic at or after this ISO-8601 time')
    .option('--until <time>', 'only traffic before this ISO-8601 time')
    .option('--json', 'print the report as JSON on stdout')
    .action(async (options, command: Command) => {
      const globals = { ...command.optsWithGlobals(), ...options } as Globals & {
        model: string;
        since?: string;
        until?: string;
      };
      const { model, ref } = parseModelReference(globals.model);
      const platform = await LocalPlatform.open({ home: globals.home });
      try {
        const report = await runMonitor(
          platform.store,
          { model, version: ref, since: globals.since, until: globals.until },
          { events: platform.bus, registry: platform.registry },
        );
        const quality = (await hasLabels(platform.store, model))
          ? await computeQuality(
              platform.store,
              { model, version: report.version, since: globals.since, until: globals.until },
              { events: platform.bus, registry: platform.registry },
            )
          : null;
        const html = platform.store.pathOf(report.keys.html);
        if (globals.json) {
          process.stdout.write(`${JSON.stringify({ report, quality, html }, null, 2)}\n`);
        } else {
          process.stdout.write(`${formatDriftReport(report, quality)}\nreport: ${html}\n`);
        }
      } finally {
        await platform.bus.drain();
      }
    });

  const labels = program.command('labels').description('late ground truth for model quality');
  labels
    .command('ingest')
    .description('ingest a label file (CSV, JSON Lines or Parquet: requestId, optional row, label or value)')
    .argument('<file>', 'the label file')
    .requiredOption('--model <name>', 'model the labels belong to')
    .option('--label-column <name>', 'column holding the label (default: label, value or the model’s target)')
    .option('--json', 'machine-readable output')
    .action(async (file: string, options, command: Command) => {
      const globals = { ...command.optsWithGlobals(), ...options } as Globals & {
        model: string;
        labelColumn?: string;
      };
      const { model, ref } = parseModelReference(globals.model);
      if (ref !== undefined) {
        throw new ValidationError(
          `labels belong to a model, not a version: use --model ${model} (requests are matched to versions by id)`,
        );
      }
      const platform = await LocalPlatform.open({ home: globals.home });
      try {
        const ingest = await ingestLabels(platform.store, model, file, {
          events: platform.bus,
          registry: platform.registry,
          labelColumn: globals.labelColumn,
        });
        const quality = await computeQuality(
          platform.store,
          { model },
          { events: platform.bus, registry: platform.registry },
        );
        if (globals.json) process.stdout.write(`${JSON.stringify({ ingest, quality }, null, 2)}\n`);
        else process.stdout.write(`${formatIngest(ingest)}\n${formatQuality(quality)}\n`);
      } finally {
        await platform.bus.drain();
      }
    });
}

/** The drift report as a terminal table, with the quality lines when there are labels. */
export function formatDriftReport(report: DriftReport, quality: QualityReport | null = null): string {
  const lines = [report.summary];
  const columns = report.prediction ? [...report.features, report.prediction] : report.features;
  if (report.status !== 'no-traffic' && columns.length > 0) {
    const rows = columns.map((c) => [
      c === report.prediction ? '(prediction)' : c.column,
      c.kind,
      String(c.rows),
      c.psi === null ? '—' : formatNumber(c.psi),
      c.jsDistance === null ? '—' : formatNumber(c.jsDistance),
      c.test ? `${c.test.name === 'chi-squared' ? 'χ²' : 'KS'} ${formatNumber(c.test.statistic)}` : '—',
      c.test ? formatP(c.test.adjustedPValue) : '—',
      c.status !== 'tested'
        ? 'too few rows'
        : c.drifted
          ? 'DRIFT'
          : c.significant
            ? 'significant, small'
            : 'ok',
    ]);
    const header = ['column', 'kind', 'rows', 'PSI', 'JS', 'test', 'adj. p', 'verdict'];
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
    const format = (cells: string[]) =>
      `  ${cells.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join('  ')}`.trimEnd();
    lines.push(format(header), ...rows.map(format));
  }
  if (quality) lines.push(formatQuality(quality));
  return lines.join('\n');
}

function formatIngest(result: LabelIngestResult): string {
  const lines = [
    `${result.model}: ${result.alreadyIngested ? 'already ingested' : 'ingested'} ${result.accepted} labels from ${result.source} (column ${result.labelColumn})`,
  ];
  if (result.invalid) {
    lines.push(
      `  ${result.invalid} rows refused: ${result.invalidExamples
        .slice(0, 3)
        .map((e) => `row ${e.row}: ${e.reason}`)
        .join('; ')}`,
    );
  }
  if (result.duplicates) lines.push(`  ${result.duplicates} duplicate rows (the last one counts)`);
  if (result.unknownRequestIds) {
    lines.push(
      `  ${result.unknownRequestIds} label${result.unknownRequestIds === 1 ? '' : 's'} name${result.unknownRequestIds === 1 ? 's' : ''} no captured request: ${result.unknownExamples.slice(0, 3).join(', ')}${result.unknownRequestIds > 3 ? ', …' : ''}`,
    );
  }
  const unexpected = Object.keys(result.unexpectedLabels);
  if (unexpected.length)
    lines.push(`  labels that are none of the model's classes: ${unexpected.join(', ')}`);
  return lines.join('\n');
}

function formatQuality(report: QualityReport): string {
  const lines = [`quality: ${report.summary}`];
  for (const version of report.versions) {
    if (version.value === null) continue;
    lines.push(`  v${version.version}: ${version.reason}`);
  }
  return lines.join('\n');
}

function formatP(p: number): string {
  return p < 1e-4 ? p.toExponential(1) : p.toFixed(4);
}
