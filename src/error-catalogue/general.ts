/** Errors of configuration and usage, the host, functions, the node's API and daemon, and internal errors: the shape of each code's details and its catalogue entry (see shared.ts). */
import type { AreaCatalogue, NoDetails, HostCommandDetails } from './shared.js';

/**
 * A value that was refused (EMB_USAGE, EMB_CONFIG_INVALID, EMB_FUNCTION_SPEC_INVALID): the option as
 * the user names it (a flag, an environment variable, a spec field, a setting), the value given, and
 * what is accepted or what is wrong with it. The message reads "<option> must be <expected>, not
 * <value>" or "<option> <value> <problem>", then ": <reason>" when there is one.
 */
export interface BadValueDetails {
  /** The flag, variable, field or setting, as the user names it: '--accel', 'EMBERS_S3_BUCKET', 'S3 endpoint'. */
  readonly option: string;
  /** The value given (left out when the option is missing, or its value is a secret). */
  readonly value?: unknown;
  /** What is accepted, as the end of "<option> must be …": 'auto, kvm or tcg', 'an integer from 1 to 64'. */
  readonly expected?: string;
  /** What is wrong, as the end of "<option> <value> …": 'is not an http(s) URL', 'needs --restore-hook'. */
  readonly problem?: string;
  /** The text of the underlying error (from the OS or a library), after a colon. */
  readonly reason?: string;
}

export interface GeneralErrorDetails {
  /** A bad command line: a refused option value (BadValueDetails), or a command's synopsis
   * (`usage`) when its arguments are missing, or the argument parser's own message (`reason`). */
  EMB_USAGE: Partial<BadValueDetails> & {
    /** The synopsis of the command, after "usage: ": 'embers run <image> [options]'. */
    readonly usage?: string;
    readonly argv?: string[];
    /** A command the CLI does not have. */
    readonly unknownCommand?: string;
    /** An option before the command that is not a global option, and the global options. */
    readonly unknownOption?: string;
    readonly globalOptions?: readonly string[];
  };
  EMB_CONFIG_INVALID: BadValueDetails & {
    /** The field of a function spec that is wrong (validateFunctionSpec). */
    readonly field?: string;
    /** Network slots (clone IPs) still free, when more instances were asked for. */
    readonly room?: number;
  };
  EMB_NOT_ROOT: NoDetails;
  EMB_HOST_TOOL_MISSING: {
    readonly cmd?: string;
    readonly debianPackage?: string;
    readonly header?: string;
    readonly program?: string;
  };
  EMB_HOST_COMMAND_FAILED: HostCommandDetails;
  EMB_FUNCTION_NOT_FOUND: { readonly function: string };
  /** Like BadValueDetails; the option defaults to the spec field (or "the function spec"). */
  EMB_FUNCTION_SPEC_INVALID: Partial<BadValueDetails> & {
    /** The field of the spec that is wrong (clients branch on it). */
    readonly field?: string;
    readonly name?: unknown;
    readonly hostCpus?: number;
    readonly hostMemoryMiB?: number;
  };
  EMB_FUNCTION_QUEUE_FULL: {
    readonly function: string;
    readonly queued: number;
    readonly retryAfterSeconds?: number;
    /** The function's live instances, all busy. */
    readonly instances: number;
    readonly maxInstances: number;
  };
  EMB_FUNCTION_TIMEOUT: { readonly function?: string; readonly requestTimeoutSeconds?: number };
  EMB_FUNCTION_DRAINING: { readonly function?: string };
  EMB_API_AUTH: NoDetails;
  EMB_API_ROUTE_NOT_FOUND: {
    readonly method?: string;
    readonly url?: string;
    /** Why a route that exists is not served here: 'this node serves no snapshots to peers'. */
    readonly problem?: string;
  };
  EMB_API_BODY_TOO_LARGE: { readonly limit: number; readonly what?: string };
  EMB_API_UNREACHABLE: { readonly api: string; readonly reason: string };
  EMB_NODE_BUSY: { readonly home: string; readonly lock?: string; readonly pid?: number };
  /** A bug: `problem` says what broke, as a sentence; the other fields are context. */
  EMB_INTERNAL: {
    readonly problem: string;
    /** What was being done, as the start of the message: 'cpio', 'PUT /vm'. */
    readonly during?: string;
    readonly candidates?: string[];
    readonly dir?: string;
    readonly field?: string;
    readonly file?: string;
    readonly method?: string;
    readonly name?: string;
    readonly offset?: number;
    readonly op?: unknown;
    readonly params?: unknown;
    readonly path?: string;
    readonly socket?: string;
    readonly status?: number;
    readonly value?: number;
    readonly vm?: string;
  };
}

/** A value as a message shows it: numbers bare, strings and the rest as JSON. */
function shown(value: unknown): string {
  return typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint'
    ? String(value)
    : (JSON.stringify(value) ?? String(value));
}

/** "<option> must be <expected>, not <value>" or "<option> <value> <problem>", then ": <reason>". */
function badValueMessage(d: Partial<BadValueDetails>, option: string): string {
  const value = d.value === undefined ? '' : shown(d.value);
  const head =
    d.expected !== undefined
      ? `${option} must be ${d.expected}${value && `, not ${value}`}`
      : `${option}${value && ` ${value}`} ${d.problem ?? 'is not valid'}`;
  return d.reason === undefined ? head : `${head}: ${d.reason}`;
}

export const GENERAL_ERRORS = {
  // configuration and usage
  EMB_USAGE: {
    summary: 'bad command-line usage',
    message: (d) =>
      d.option !== undefined
        ? badValueMessage(d, d.option)
        : d.unknownCommand !== undefined
          ? `unknown command ${shown(d.unknownCommand)}`
          : d.unknownOption !== undefined
            ? `unknown option ${d.unknownOption} before the command; global options are ${d.globalOptions?.join(' ')}`
            : d.usage !== undefined
              ? `usage: ${d.usage}`
              : (d.reason ?? 'bad command-line usage'),
    hint: 'run `embers --help`',
    exit: 64,
  },
  EMB_CONFIG_INVALID: {
    summary: 'an option has an invalid value',
    message: (d) => badValueMessage(d, d.option),
    hint: 'check the option against `embers --help`',
    exit: 64,
  },
  EMB_NOT_ROOT: {
    summary: 'embers needs root for netns, tap devices and mounts',
    hint: 'run as root (sudo)',
    exit: 77,
  },
  EMB_HOST_TOOL_MISSING: {
    summary: 'a host program embers needs is not installed',
    message: (d) =>
      d.cmd !== undefined
        ? `host program not found: ${d.cmd}`
        : d.header !== undefined
          ? `${d.header} is missing (Debian package ${d.debianPackage})`
          : `${d.program ?? 'a host program'} is not installed (Debian package ${d.debianPackage})`,
    hint: 'run `scripts/setup.sh` (installs the Debian packages embers uses)',
    exit: 69,
  },
  EMB_HOST_COMMAND_FAILED: {
    summary: 'a host command failed',
    message: (d) => {
      if (d.spawnError !== undefined) return `could not run ${d.cmd}: ${d.spawnError}`;
      const output = d.output ?? d.stderr?.trim();
      return `${[d.cmd, ...(d.args ?? [])].join(' ')} failed (${d.failure ?? `exit code ${d.exit}`})${output ? `: ${output}` : ''}`;
    },
    hint: 'see the command output in the error details',
    exit: 70,
  },
  // functions and the node daemon (embers serve) and its HTTP API
  EMB_FUNCTION_NOT_FOUND: {
    summary: 'no function has that name on this node',
    message: (d) => `no function named ${d.function}`,
    hint: 'list functions with `embers fn ls`',
    exit: 66,
  },
  EMB_FUNCTION_SPEC_INVALID: {
    summary: 'a function spec or name is invalid',
    message: (d) => badValueMessage(d, d.option ?? d.field ?? 'the function spec'),
    hint: 'fix the field named in the message (see `embers fn deploy --help` and GET /openapi.json for the ranges)',
    exit: 65,
  },
  EMB_FUNCTION_QUEUE_FULL: {
    summary: 'every instance of the function is busy, maxInstances is reached and its request queue is full',
    message: (d) =>
      `function ${d.function}: all ${d.instances} instance(s) are busy (maxInstances ${d.maxInstances}) and ${d.queued} request(s) already wait`,
    hint: 'retry after the time in Retry-After, or raise maxInstances, concurrency or maxQueue in the spec',
    exit: 75,
  },
  EMB_FUNCTION_TIMEOUT: {
    summary: 'the request waited for an instance longer than its deadline',
    message: (d) => `function ${d.function}: no instance was free within ${d.requestTimeoutSeconds} s`,
    hint: 'retry; raise requestTimeoutSeconds or maxInstances in the spec if this repeats',
    exit: 75,
  },
  EMB_FUNCTION_DRAINING: {
    summary: 'the function is being removed, or the node is shutting down, so it takes no new requests',
    message: (d) =>
      d.function === undefined
        ? 'the node is shutting down'
        : `function ${d.function} takes no new requests: it is being removed or the node is shutting down`,
    hint: 'deploy the function again, or retry on a running node',
    exit: 75,
  },
  EMB_API_AUTH: {
    summary: 'the API refused the request: missing or wrong bearer token',
    message: () => 'missing or wrong API token',
    hint: 'send `Authorization: Bearer <token>` with the EMBERS_API_TOKEN the daemon was started with',
    exit: 77,
  },
  EMB_API_ROUTE_NOT_FOUND: {
    summary: 'the API has no such route',
    message: (d) => d.problem ?? `no route ${d.method} ${d.url}`,
    hint: 'see GET /openapi.json for the routes',
    exit: 64,
  },
  EMB_API_BODY_TOO_LARGE: {
    summary: 'the request body is larger than the API accepts',
    message: (d) => `the ${d.what ?? 'request'} body is larger than ${d.limit} bytes`,
    hint: 'send a smaller body (see --body-limit of embers serve)',
    exit: 65,
  },
  EMB_API_UNREACHABLE: {
    summary: 'the embers daemon could not be reached',
    message: (d) => `cannot reach the embers daemon at ${d.api}: ${d.reason}`,
    hint: 'start it with `embers serve` on this node, or point EMBERS_API at the node that runs it',
    exit: 69,
  },
  EMB_NODE_BUSY: {
    summary: 'another embers daemon already serves this home',
    message: (d) => `embers serve already runs for ${d.home}${d.pid === undefined ? '' : ` (pid ${d.pid})`}`,
    hint: 'stop it first, use its API (EMBERS_API), or serve another --home',
    exit: 75,
  },
  EMB_INTERNAL: {
    summary: 'an internal error',
    message: (d) => (d.during === undefined ? d.problem : `${d.during}: ${d.problem}`),
    hint: 'this is a bug in embers: please report it with the details',
    exit: 70,
  },
} as const satisfies AreaCatalogue<GeneralErrorDetails>;
