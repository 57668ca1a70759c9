import { EmbersError } from '../errors.js';
import { GLOBAL_OPTIONS } from './args.js';

/** One option of a command: how it parses (node:util parseArgs) and what `embers CMD --help` says of it. */
export interface OptionSpec {
  type: 'string' | 'boolean';
  multiple?: boolean;
  default?: boolean;
  short?: string;
  /** The value's placeholder in help, e.g. N or URL. */
  arg?: string;
  help: string;
}

export interface CommandSpec {
  /** What follows `embers` in the usage line. */
  usage: string;
  summary: string;
  /** Sub-commands with what each does (snapshot, image, guest). */
  subcommands?: Record<string, string>;
  options: Record<string, OptionSpec>;
}

const readyTimeout = {
  type: 'string',
  arg: 'DURATION',
  help: 'how long to wait for the function to answer (e.g. 90s; default 60s)',
} as const;

/**
 * Every command of the CLI, with its options: `main.ts` parses each command's arguments with
 * these, `embers CMD --help` prints them, and a unit test checks that every flag and command
 * an error hint names is here.
 */
export const COMMANDS = {
  run: {
    usage: 'run <image> [options]',
    summary: 'boot a function microVM from an image and wait until it answers',
    options: {
      name: { type: 'string', arg: 'N', help: 'instance name (default fn-<random>)' },
      vcpus: { type: 'string', arg: 'N', help: 'virtual CPUs, at most the host has (default 1)' },
      memory: { type: 'string', arg: 'MIB', help: 'guest memory in MiB, 64 up to the host memory (default 256)' },
      port: { type: 'string', arg: 'PORT', help: 'the guest port the function serves HTTP on, 1-65535 (default 8080)' },
      env: { type: 'string', multiple: true, arg: 'K=V', help: "environment entry added to the image's (repeatable)" },
      'ready-timeout': readyTimeout,
      'restore-hook': {
        type: 'string',
        arg: 'PATH',
        help: "an executable in the image run after every restore of this function's snapshots (default: the image's org.embers.restore-hook label)",
      },
      'restore-hook-timeout': {
        type: 'string',
        arg: 'DURATION',
        help: 'how long the restore hook may run before the restore fails (default 30s)',
      },
    },
  },
  invoke: {
    usage: 'invoke <instance> [options]',
    summary: 'one HTTP request to the function',
    options: {
      path: { type: 'string', arg: 'PATH', help: 'request path and query (default /)' },
      data: { type: 'string', arg: 'TEXT', help: 'request body (the method defaults to POST with a body)' },
      method: { type: 'string', arg: 'METHOD', help: 'HTTP method (default GET)' },
    },
  },
  ps: { usage: 'ps', summary: 'list instances', options: {} },
  logs: { usage: 'logs <instance>', summary: 'the guest console', options: {} },
  exec: {
    usage: 'exec <instance> [options] -- <command> [args]...',
    summary:
      "run a command in the guest through the guest agent (never the guest network): output streamed, its exit code returned; a command the image lacks runs as the kit's busybox applet",
    options: {
      timeout: {
        type: 'string',
        arg: 'DURATION',
        help: "kill the command's process group after this long (exit code 124; default 60s, 0: none)",
      },
      shell: {
        type: 'boolean',
        default: false,
        help: "run the one argument as a script with the kit's busybox sh -c (no shell otherwise)",
      },
      kit: {
        type: 'boolean',
        default: false,
        help: "run in the guest kit's root (busybox; the function's disk is at /newroot) instead of the function's",
      },
    },
  },
  stop: {
    usage: 'stop <instance>... | --all',
    summary: 'stop instances and release what they hold',
    options: { all: { type: 'boolean', default: false, help: 'stop every instance' } },
  },
  down: { usage: 'down', summary: "stop everything and tear down this node's network pool", options: {} },
  snapshot: {
    usage: 'snapshot <create|restore|record-ws|ls|inspect|rm|push|pull> [args] [options]',
    summary: 'create, restore, list, check, remove and transfer snapshots',
    subcommands: {
      create: '<instance>: pause, snapshot (state, memory, disk delta), resume (or stop)',
      restore: '<id>: restore N clones concurrently; each answers before this returns',
      'record-ws':
        "<id>: record the snapshot's working set (REAP, QEMU): restore a clone with the memory file out of the page cache, serve the first request, keep the pages it read",
      ls: 'list local snapshots (--remote: those in the S3-compatible store)',
      inspect: '<id>: the manifest (--verify: check every file against its sha256)',
      rm: '<id>: remove a snapshot',
      push: '<id>: upload a snapshot to the S3-compatible store',
      pull: '<id>: download a snapshot from the store (or a peer node), verified',
    },
    options: {
      'disk-diff': {
        type: 'string',
        arg: 'block|rsync',
        help: 'create: how disk changes are captured (default block)',
      },
      stop: {
        type: 'boolean',
        default: false,
        help: 'create: stop the instance after the snapshot instead of resuming it',
      },
      count: { type: 'string', arg: 'N', help: 'restore: clones to restore concurrently (default 1)' },
      name: { type: 'string', multiple: true, arg: 'N', help: 'restore: a clone name (repeatable)' },
      verify: { type: 'boolean', default: false, help: 'inspect: check every file against its size and sha256' },
      'allow-unverified-disk': {
        type: 'boolean',
        default: false,
        help: 'restore: accept an rsync-mode disk that cannot be proven bit-identical',
      },
      'allow-host-mismatch': {
        type: 'boolean',
        default: false,
        help: "restore: restore on a host whose CPU, VMM or guest kernel differs from the snapshot's (differences become warnings)",
      },
      'ready-timeout': readyTimeout,
      prefetch: {
        type: 'string',
        arg: 'auto|on|off',
        help: "restore: prefetch the snapshot's working set before the clones resume, QEMU through the page cache, Firecracker through its page server (default auto: when it has one)",
      },
      path: { type: 'string', arg: 'PATH', help: "record-ws: the first request's path (default /)" },
      remote: { type: 'boolean', default: false, help: 'ls: list the S3-compatible store instead' },
      'from-peer': { type: 'string', arg: 'URL', help: 'restore, pull: fetch from this peer node (embers serve)' },
      token: { type: 'string', arg: 'TOKEN', help: 'the peer token (default EMBERS_PEER_TOKEN)' },
    },
  },
  serve: {
    usage: 'serve [options]',
    summary: 'the node daemon: functions and their lifecycle, the HTTP API, metrics and the peer endpoints',
    options: {
      listen: {
        type: 'string',
        arg: 'ADDRESS',
        help: 'address to listen on (default 127.0.0.1; any other needs EMBERS_API_TOKEN)',
      },
      port: { type: 'string', arg: 'PORT', help: 'port to listen on (default 7070)' },
      'peer-token': {
        type: 'string',
        arg: 'TOKEN',
        help: 'the token peers must send for snapshot files (default EMBERS_PEER_TOKEN)',
      },
      token: { type: 'string', arg: 'TOKEN', help: 'the same as --peer-token' },
      peer: {
        type: 'string',
        multiple: true,
        arg: 'URL',
        help: 'a peer node (its embers serve URL) whose snapshots cold starts restore from; repeatable (default EMBERS_PEERS, comma-separated; they share the peer token)',
      },
      'record-working-sets': {
        type: 'string',
        arg: 'on|off',
        help: "record each new snapshot's working set (REAP) with a clone of its own, for prefetching restores (default on)",
      },
      'drain-timeout': {
        type: 'string',
        arg: 'DURATION',
        help: 'on SIGTERM, how long queued requests may still be served (default 30s)',
      },
      'body-limit': {
        type: 'string',
        arg: 'BYTES',
        help: 'the largest API request body in bytes, invocations aside (default 1 MiB)',
      },
    },
  },
  fn: {
    usage: 'fn <deploy|ls|inspect|rm|invoke> [args] [options]',
    summary: 'functions on the node daemon (embers serve; EMBERS_API, default http://127.0.0.1:7070)',
    subcommands: {
      deploy: '<name> <image>: create or update a function; answers with its revision',
      ls: 'list functions with their revision, instances and snapshot',
      inspect: '<name>: spec, revision, instances and snapshot state',
      rm: '<name>: drain and remove a function (--delete-snapshots: its snapshots too)',
      invoke: '<name>: one HTTP request through the daemon',
    },
    options: {
      vcpus: { type: 'string', arg: 'N', help: 'deploy: virtual CPUs (default 1)' },
      memory: { type: 'string', arg: 'MIB', help: 'deploy: guest memory in MiB (default 256)' },
      port: { type: 'string', arg: 'PORT', help: 'deploy: the guest port (default 8080)' },
      env: { type: 'string', multiple: true, arg: 'K=V', help: 'deploy: environment entry (repeatable)' },
      min: { type: 'string', arg: 'N', help: 'deploy: instances kept warm (default 0)' },
      max: { type: 'string', arg: 'N', help: 'deploy: most instances (default 10)' },
      concurrency: { type: 'string', arg: 'N', help: 'deploy: requests one instance takes at once (default 1)' },
      'idle-timeout': {
        type: 'string',
        arg: 'DURATION',
        help: 'deploy: idle time before an instance stops (default 60s)',
      },
      'snapshot-when': {
        type: 'string',
        arg: 'first-invocation|ready',
        help: 'deploy: when the snapshot is taken (default first-invocation)',
      },
      'max-queue': { type: 'string', arg: 'N', help: 'deploy: requests that may wait for an instance (default 100)' },
      'request-timeout': { type: 'string', arg: 'DURATION', help: 'deploy: how long a request may wait (default 60s)' },
      'delete-snapshots': { type: 'boolean', default: false, help: "rm: remove the function's snapshots too" },
      path: { type: 'string', arg: 'PATH', help: 'invoke: request path and query (default /)' },
      data: { type: 'string', arg: 'TEXT', help: 'invoke: request body' },
      method: { type: 'string', arg: 'METHOD', help: 'invoke: HTTP method (default GET, POST with --data)' },
      header: { type: 'string', multiple: true, arg: 'K:V', help: 'invoke: request header (repeatable)' },
    },
  },

  image: {
    usage: 'image <pull|ls|inspect|rm|gc> [ref]',
    summary: 'pull, list, inspect and remove images',
    subcommands: {
      pull: '<ref>: pull from a registry (or read a local OCI layout / docker save archive), verify, flatten to a deterministic rootfs',
      ls: 'list cached images',
      inspect: '<ref>: what is cached for an image',
      rm: '<ref>: remove an image no instance or snapshot uses',
      gc: 'remove what no instance or snapshot uses',
    },
    options: {},
  },
  guest: {
    usage: 'guest <build|build-kernel>',
    summary: 'build the guest kernel and initramfs',
    subcommands: {
      build: 'build (or find cached) the guest kernel and initramfs',
      'build-kernel': "build a kernel from Debian's linux-source with Firecracker's guest config",
    },
    options: {},
  },
  demo: {
    usage: 'demo [options]',
    summary: 'boot the test function, call it, snapshot it, restore clones and show the timings',
    options: { clones: { type: 'string', arg: 'N', help: 'clones to restore (default 3)' } },
  },
  doctor: { usage: 'doctor', summary: 'what this host has: accelerator, hypervisors, tools', options: {} },
} as const satisfies Record<string, CommandSpec>;

export type CommandName = keyof typeof COMMANDS;

export function isCommand(name: string): name is CommandName {
  return Object.hasOwn(COMMANDS, name);
}

/** What `embers CMD --help` prints. */
export function commandHelp(name: CommandName): string {
  const spec: CommandSpec = COMMANDS[name];
  const lines = [`usage: embers ${spec.usage}`, '', spec.summary];
  const table = (rows: [string, string][]) => {
    const width = Math.max(...rows.map(([k]) => k.length)) + 2;
    return rows.map(([k, v]) => `  ${k.padEnd(width)}${v}`);
  };
  if (spec.subcommands) lines.push('', 'commands:', ...table(Object.entries(spec.subcommands)));
  const options = Object.entries(spec.options);
  if (options.length)
    lines.push('', 'options:', ...table(options.map(([k, o]) => [`--${k}${o.arg ? ` ${o.arg}` : ''}`, o.help])));
  lines.push(
    '',
    `global options (before or after the command): ${Object.keys(GLOBAL_OPTIONS)
      .map((k) => `--${k}`)
      .join(' ')}`,
    'see `embers --help`',
  );
  return `${lines.join('\n')}\n`;
}

/**
 * Moves global options given before the command (`embers --home DIR run …`) after it, so
 * they parse as if written there: git, docker and kubectl take them in both places.
 * Returns the command and its arguments.
 */
export function hoistGlobalOptions(argv: string[]): { command: string | undefined; args: string[] } {
  const globals: string[] = [];
  let i = 0;
  for (; i < argv.length && argv[i].startsWith('-') && argv[i] !== '-' && argv[i] !== '--'; i++) {
    const arg = argv[i];
    const name = arg === '-h' ? 'help' : arg.startsWith('--') ? arg.slice(2).split('=')[0] : '';
    const spec = Object.hasOwn(GLOBAL_OPTIONS, name)
      ? (GLOBAL_OPTIONS as Record<string, { type: string }>)[name]
      : undefined;
    if (!spec) {
      throw EmbersError.of('EMB_USAGE', {
        unknownOption: arg,
        globalOptions: Object.keys(GLOBAL_OPTIONS).map((k) => `--${k}`),
      });
    }
    globals.push(arg);
    if (spec.type === 'string' && !arg.includes('=')) {
      if (i + 1 >= argv.length) throw EmbersError.of('EMB_USAGE', { option: arg, problem: 'needs a value' });
      globals.push(argv[++i]);
    }
  }
  // globals go before a `--`: what follows it is a command for the guest (embers exec)
  const rest = argv.slice(i + 1);
  const dd = rest.indexOf('--');
  return {
    command: argv[i],
    args: dd < 0 ? [...rest, ...globals] : [...rest.slice(0, dd), ...globals, ...rest.slice(dd)],
  };
}
