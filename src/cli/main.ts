/**
 * The `embers` command line: global options and help, then one command, dispatched to the
 * file of its group (instance-commands, snapshot-commands, image-commands, serve-command,
 * fn, demo). A failure is reported by output.ts and exits with its error code's exit code.
 */
import { EmbersError } from '../errors.js';
import { intOption, parse } from './args.js';
import { COMMANDS, commandHelp, hoistGlobalOptions, isCommand } from './commands.js';
import { Output } from './output.js';
import { runDemo } from './demo.js';
import { fnCommand } from './fn.js';
import { imageCommand } from './image-commands.js';
import {
  doctorCommand,
  downCommand,
  execCommand,
  guestCommand,
  invokeCommand,
  logsCommand,
  psCommand,
  runCommand,
  stopCommand,
} from './instance-commands.js';
import { nodeOptions } from './node-options.js';
import { serveCommand } from './serve-command.js';
import { snapshotCommand } from './snapshot-commands.js';
import { USAGE } from './usage.js';

async function main(argv: string[]): Promise<number> {
  const out = new Output(argv.includes('--json'));
  try {
    const { command, args: rest } = hoistGlobalOptions(argv);
    const help = rest.includes('--help') || rest.includes('-h');
    if (!command || command === 'help') {
      const topic = rest.find((a) => !a.startsWith('-'));
      process.stdout.write(topic && isCommand(topic) ? commandHelp(topic) : USAGE);
      return command || help ? 0 : 64;
    }
    if (help && isCommand(command)) {
      process.stdout.write(commandHelp(command));
      return 0;
    }
    return await dispatch(command, rest, out);
  } catch (err) {
    return out.fail(err);
  }
}

async function dispatch(command: string, argv: string[], out: Output): Promise<number> {
  switch (command) {
    case 'run':
      return runCommand(argv, out);
    case 'invoke':
      return invokeCommand(argv, out);
    case 'ps':
      return psCommand(argv, out);
    case 'logs':
      return logsCommand(argv, out);
    case 'exec':
      return execCommand(argv, out);
    case 'stop':
      return stopCommand(argv, out);
    case 'down':
      return downCommand(argv, out);
    case 'guest':
      return guestCommand(argv, out);
    case 'snapshot':
      return snapshotCommand(argv, out);
    case 'serve':
      return serveCommand(argv, out);
    case 'fn':
      return fnCommand(argv, out);
    case 'image':
      return imageCommand(argv, out);
    case 'demo': {
      const { values } = parse(argv, COMMANDS.demo.options);
      return runDemo(nodeOptions(values, out), out, { clones: intOption(values.clones, 'clones', 3) });
    }
    case 'doctor':
      return doctorCommand(argv, out);
    default:
      throw EmbersError.of('EMB_USAGE', { unknownCommand: command });
  }
}

process.exitCode = await main(process.argv.slice(2));
