import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { describeError, KilnError, ValidationError } from '../core/errors.ts';
import { PipelineFailedError } from '../local/pipeline-runner.ts';
import * as commands from './commands.ts';
import { addDemoCommands } from './demo-commands.ts';
import { addMonitorCommands } from './monitor-commands.ts';
import { addRegistryCommands, openLocalRegistry } from './registry-commands.ts';
import { addSchemaCommands } from './schema-commands.ts';

/** Builds the command tree; each action returns the process exit code. */
export function buildProgram(): Command {
  const program = new Command('kiln')
    .description('Kiln: the MLOps loop — ingest, ETL, train, register, serve — locally or on AWS')
    .version(commands.packageVersion())
    .showHelpAfterError('(run with --help for usage)')
    .option('--home <dir>', 'local platform home', process.env.KILN_HOME ?? '.kiln');

  program
    .command('up')
    .description('run the whole loop on the sample data (or --data/--target) and serve the model')
    .option('--data <file>', 'your own CSV / JSON Lines / Parquet file instead of the bundled sample')
    .option('--target <column>', 'the column to predict (required with --data)')
    .option('--dataset <name>', 'dataset name (default: from the file name)')
    .option('--model <name>', 'model name (default: the dataset name)')
    .addOption(portOption())
    .addOption(registryPortOption())
    .option('--once', 'exit after the summary instead of serving until Ctrl-C')
    .option('--json', 'print the summary as JSON on stdout')
    .action(async (options, command: Command) => commands.up({ ...command.optsWithGlobals(), ...options }));

  program
    .command('ingest')
    .description('land files (CSV, JSON Lines, Parquet; gzip ok) in the raw zone of a dataset')
    .argument('<files...>', 'files to ingest')
    .requiredOption('--dataset <name>', 'dataset name')
    .option('--json', 'machine-readable output')
    .action(async (files: string[], options, command: Command) =>
      commands.ingest(files, { ...command.optsWithGlobals(), ...options }),
    );

  program
    .command('etl')
    .description('run the ETL state machine: validate, quarantine, curate to versioned Parquet')
    .requiredOption('--dataset <name>', 'dataset name')
    .option('--json', 'machine-readable output')
    .action(async (options, command: Command) => commands.etl({ ...command.optsWithGlobals(), ...options }));

  program
    .command('train')
    .description('run the training state machine: train, evaluate on held-out rows, gate, register')
    .requiredOption('--dataset <name>', 'curated dataset to train on')
    .requiredOption('--target <column>', 'column to predict')
    .option('--model <name>', 'model name (default: the dataset name)')
    .addOption(
      new Option('--algorithm <name>', 'built-in algorithm').choices(['gbdt', 'linear']).default('gbdt'),
    )
    .option('--dataset-version <version>', 'curated version (default: latest)')
    .option('--test-data <file>', 'evaluate on this file instead of the held-out split')
    .option('--param <key=value...>', 'hyperparameter, repeatable (e.g. --param max_iter=200)')
    .option('--seed <n>', 'random seed', parseInteger, 0)
    .option('--gate-margin <x>', 'how much a challenger must beat the champion by', parseFloatStrict, 0)
    .addOption(
      new Option(
        '--command <cmd>',
        'bring your own: train with this command under the SageMaker training contract (docs/byo-training.md)',
      ).conflicts('image'),
    )
    .option(
      '--image <image>',
      'bring your own: a training image (locally mapped to a command in <home>/images.json)',
    )
    .option('--instance-type <type>', 'SageMaker instance type of the job, e.g. ml.g5.xlarge for a GPU')
    .option('--json', 'machine-readable output')
    .action(async (options, command: Command) =>
      commands.train({ ...command.optsWithGlobals(), ...options }),
    );

  const models = program.command('models').description('the model registry');
  models
    .command('list')
    .description('list models with their versions and aliases')
    .option('--json', 'machine-readable output')
    .action(async (options, command: Command) =>
      commands.modelsList({ ...command.optsWithGlobals(), ...options }),
    );
  models
    .command('show')
    .description('show a model version with metrics and lineage')
    .argument('<model>', 'NAME, NAME@VERSION or NAME@ALIAS')
    .option('--json', 'machine-readable output')
    .action(async (reference: string, options, command: Command) =>
      commands.modelsShow(reference, { ...command.optsWithGlobals(), ...options }),
    );
  addRegistryCommands(models, openLocalRegistry);

  addSchemaCommands(program.command('schema').description('dataset schema contracts'));

  program
    .command('serve')
    .description(
      'serve every registered model (its champion) over HTTP: SageMaker contract + Open Inference Protocol',
    )
    .addOption(portOption())
    .addOption(registryPortOption())
    .option('--host <address>', 'address to bind', '127.0.0.1')
    .option(
      '--monitor-every <minutes>',
      'run the drift/quality monitor over captured traffic this often',
      parsePositive,
      15,
    )
    .action(async (options, command: Command) =>
      commands.serve({ ...command.optsWithGlobals(), ...options }),
    );

  program
    .command('predict')
    .description('batch-score a file with a registered model')
    .requiredOption('--model <ref>', 'NAME, NAME@VERSION or NAME@ALIAS')
    .requiredOption('--input <file>', 'CSV, JSON Lines or Parquet rows (target column optional)')
    .option('--output <file>', 'write predictions here (.csv or .jsonl); default stdout as JSON Lines')
    .action(async (options, command: Command) =>
      commands.predict({ ...command.optsWithGlobals(), ...options }),
    );

  addMonitorCommands(program);
  addDemoCommands(program);
  return program;
}

/** Parses argv and runs the command; every failure becomes one line on stderr and a non-zero exit code. */
export async function runCli(argv: string[]): Promise<number> {
  const program = buildProgram();
  for (const command of allCommands(program)) command.exitOverride();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Commander already printed help/version or the usage error.
      return error.exitCode === 0 ? 0 : 2;
    }
    process.stderr.write(`kiln: ${describeError(error)}\n`);
    if (process.env.KILN_DEBUG && error instanceof Error) process.stderr.write(`${error.stack}\n`);
    if (error instanceof ValidationError || error instanceof InvalidArgumentError) return 2;
    if (error instanceof KilnError || error instanceof PipelineFailedError) return 1;
    return 1;
  }
}

function allCommands(command: Command): Command[] {
  return [command, ...command.commands.flatMap(allCommands)];
}

function registryPortOption(): Option {
  return new Option(
    '--registry-port <n>',
    'TCP port of the local registry API (default: --port + 1)',
  ).argParser(parsePort);
}

function portOption(): Option {
  return new Option('--port <n>', 'TCP port').argParser(parsePort).default(8080);
}

function parsePort(value: string): number {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new InvalidArgumentError(`expected a port from 0 to 65535, got ${JSON.stringify(value)}`);
  }
  return port;
}

function parsePositive(value: string): number {
  const number = Number(value);
  if (!(number > 0))
    throw new InvalidArgumentError(`expected a positive number, got ${JSON.stringify(value)}`);
  return number;
}

function parseInteger(value: string): number {
  const number = Number(value);
  if (!Number.isInteger(number))
    throw new InvalidArgumentError(`expected an integer, got ${JSON.stringify(value)}`);
  return number;
}

function parseFloatStrict(value: string): number {
  const number = Number(value);
  if (!Number.isFinite(number))
    throw new InvalidArgumentError(`expected a number, got ${JSON.stringify(value)}`);
  return number;
}
