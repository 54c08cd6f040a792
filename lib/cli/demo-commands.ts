import type { Command } from 'commander';
import type { DrillResult } from '../updates/drill.ts';

/** `kiln demo …`: drills that run a part of the loop end to end on the bundled data. */
export function addDemoCommands(program: Command): void {
  const demo = program
    .command('demo')
    .description('drills that run the MLOps loop end to end on sample data');
  demo
    .command('drift')
    .description(
      'land shifted data, watch drift get detected, retraining start (debounced), the gate decide and a canary promote or roll back',
    )
    .option('--json', 'print { events, drift, runs, gate, canary } as JSON on stdout')
    .action(async (options: { json?: boolean }, command: Command) => {
      const { home } = command.optsWithGlobals<{ home: string }>();
      // The timeline goes to stderr as it happens, so it shows with --json too (stdout carries the JSON).
      // Loaded on use: the drill pulls in the server, the monitor and the rollout, which other commands skip.
      const { runDriftDrill } = await import('../updates/drill.ts');
      const result = await runDriftDrill({ home, log: (line) => process.stderr.write(`${line}\n`) });
      process.stdout.write(
        options.json ? `${JSON.stringify(jsonOf(result), null, 2)}\n` : `${summary(result)}\n`,
      );
    });
}

function jsonOf(result: DrillResult) {
  return {
    events: result.events,
    drift: result.drift,
    runs: result.runs,
    gate: result.gate,
    canary: result.canary,
    model: result.model,
    champion: result.champion,
    timeline: result.timeline,
    home: result.home,
    seconds: result.seconds,
  };
}

function summary(result: DrillResult): string {
  const trained = result.runs.find((run) => run.status === 'trained');
  return [
    '',
    `Drift drill done in ${result.seconds} s (home ${result.home}).`,
    `  drift     ${result.drift.summary}`,
    `  report    ${result.drift.htmlKey}`,
    `  runs      ${result.runs.length} retraining run(s) for ${result.events.filter((e) => ['EtlRunSucceeded', 'DriftDetected', 'QualityDropped'].includes(e.detailType)).length} triggering event(s): ${result.runs.map((run) => `${run.runId} ${run.status}`).join(', ') || 'none'}`,
    `  gate      ${String(result.gate?.reason ?? (trained ? 'no gate result' : 'no model trained'))}`,
    `  canary    ${result.canary.status}${result.canary.challenger ? ` (${result.model}@${result.canary.challenger} vs @${result.canary.champion})` : ''}${result.canary.reasons.length ? `: ${result.canary.reasons.join('; ')}` : ''}`,
    `  champion  ${result.model}@${result.champion}`,
  ].join('\n');
}
