// The `kiln` command line: `npx kiln --help`. All behaviour lives in lib/cli; this file only runs it.
import { runCli } from '../lib/cli/program.ts';

process.exitCode = await runCli(process.argv);
