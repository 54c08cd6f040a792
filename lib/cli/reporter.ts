import cliProgress from 'cli-progress';
import type { StateProgress } from '../local/pipeline-runner.ts';

/**
 * Progress for humans on stderr (stdout stays clean for --json): a bar per pipeline that advances as the
 * state machine enters its states, and one line per finished stage with its wall time.
 */
export class Reporter {
  private readonly started = new Map<string, number>();
  private bar?: cliProgress.SingleBar;
  private readonly interactive: boolean;

  constructor(private readonly quiet: boolean) {
    this.interactive = !quiet && Boolean(process.stderr.isTTY);
  }

  stage(name: string): void {
    this.started.set(name, performance.now());
    if (!this.quiet && !this.interactive) process.stderr.write(`▸ ${name} …\n`);
  }

  done(name: string, detail = ''): void {
    const start = this.started.get(name) ?? performance.now();
    const seconds = ((performance.now() - start) / 1000).toFixed(1);
    this.stopBar();
    if (!this.quiet) process.stderr.write(`✔ ${name.padEnd(10)} ${seconds.padStart(5)} s  ${detail}\n`);
  }

  info(line: string): void {
    if (!this.quiet) process.stderr.write(`  ${line}\n`);
  }

  /** Starts a bar for a pipeline run; its total is the number of states the run passes through. */
  pipeline(totalStates: number): void {
    if (!this.interactive) return;
    this.bar = new cliProgress.SingleBar(
      { format: '  {bar} {value}/{total} states  {state}', hideCursor: true, stream: process.stderr },
      cliProgress.Presets.shades_classic,
    );
    this.bar.start(totalStates, 0, { state: '' });
  }

  /** Receives every state transition of the running pipeline. */
  readonly onState = (progress: StateProgress): void => {
    if (progress.phase === 'entered') {
      this.bar?.update({ state: progress.state });
    } else if (progress.phase === 'exited') {
      this.bar?.increment(1, { state: progress.state });
    } else if (!this.quiet && !this.interactive) {
      process.stderr.write(`  ${progress.state}: ${progress.phase}\n`);
    }
  };

  private stopBar(): void {
    this.bar?.stop();
    this.bar = undefined;
  }
}
