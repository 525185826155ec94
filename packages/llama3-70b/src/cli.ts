// The `llama3-70b` command: subcommands are modules loaded on demand.

import { describeError, EXIT_USAGE } from './cli/errors';

const COMMANDS: Record<string, { summary: string; load: () => Promise<{ main(argv: readonly string[]): Promise<number> }> }> = {
  convert: { summary: 'quantize a Hugging Face LLaMA checkpoint to W8A16 (msModelSlim layout)', load: () => import('./commands/convert') },
  run: { summary: 'generate text from a W8A16 (or float) checkpoint with paged attention (run_pa flags)', load: () => import('./commands/run') },
  eval: {
    summary: 'compare converted checkpoints with their float source: top-1, KL, perplexity (table, JSON, HTML)',
    load: () => import('./commands/eval'),
  },
  demo: { summary: 'generate the built-in model (first use), convert it, and show the result', load: () => import('./commands/demo') },
};

const USAGE = `usage: llama3-70b <command> [flags]

commands:
${Object.entries(COMMANDS)
  .map(([name, c]) => `  ${name.padEnd(10)}${c.summary}`)
  .join('\n')}

Run 'llama3-70b <command> --help' for a command's flags.`;

async function run(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return name ? 0 : EXIT_USAGE;
  }
  if (name === '--version') {
    process.stdout.write('0.1.0\n');
    return 0;
  }
  const cmd = COMMANDS[name];
  if (!cmd) {
    process.stderr.write(`error E_USAGE: unknown command '${name}'\n\n${USAGE}\n`);
    return EXIT_USAGE;
  }
  const mod = await cmd.load();
  return mod.main(rest);
}

run(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    const { text, exitCode } = describeError(err);
    process.stderr.write(`${text}\n`);
    process.exitCode = exitCode;
  },
);
