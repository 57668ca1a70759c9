/** Errors of configuration and usage, the host, functions, the node's API and daemon, and internal errors: the shape of each code's details and its catalogue entry (see shared.ts). */
import type { AreaCatalogue, NoDetails, HostCommandDetails } from './shared.js';

export interface GeneralErrorDetails {
  EMB_USAGE: { readonly argv?: string[]; readonly option?: string };
  EMB_CONFIG_INVALID: {
    readonly accel?: 'auto' | 'kvm' | 'tcg';
    readonly attempts?: number;
    readonly authFile?: string;
    readonly bucket?: string;
    readonly clones?: number;
    readonly concurrency?: number;
    readonly count?: number;
    readonly cpuModel?: string;
    readonly deviceDiscovery?: string;
    readonly endpoint?: string;
    readonly entry?: string;
    readonly field?: string;
    readonly host?: string;
    readonly id?: string;
    readonly image?: string;
    readonly kind?: 'debian' | 'firecracker-config';
    readonly length?: number;
    readonly listen?: string;
    readonly name?: string;
    readonly net?: unknown;
    readonly option?: string;
    readonly param?: string;
    readonly partSizeBytes?: number;
    readonly path?: string;
    readonly peer?: string;
    readonly peers?: readonly string[];
    readonly prefetch?: unknown;
    readonly prefix?: string;
    readonly room?: number;
    readonly snapshots?: unknown;
    readonly stallTimeoutMs?: number;
    readonly target?: string;
    readonly timeoutMs?: number;
    readonly url?: string;
    readonly value?: unknown;
    readonly vm?: string;
    readonly vmm?: 'auto' | 'qemu' | 'firecracker';
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
  EMB_FUNCTION_SPEC_INVALID: {
    readonly field?: string;
    readonly value?: unknown;
    readonly name?: unknown;
    readonly hostCpus?: number;
    readonly hostMemoryMiB?: number;
  };
  EMB_FUNCTION_QUEUE_FULL: {
    readonly function?: string;
    readonly queued?: number;
    readonly retryAfterSeconds?: number;
  };
  EMB_FUNCTION_TIMEOUT: { readonly function?: string; readonly requestTimeoutSeconds?: number };
  EMB_FUNCTION_DRAINING: { readonly function?: string };
  EMB_API_AUTH: NoDetails;
  EMB_API_ROUTE_NOT_FOUND: NoDetails;
  EMB_API_BODY_TOO_LARGE: { readonly limit?: number };
  EMB_API_UNREACHABLE: { readonly api?: string };
  EMB_NODE_BUSY: { readonly home?: string; readonly lock?: string };
  EMB_INTERNAL: {
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

export const GENERAL_ERRORS = {
  // configuration and usage
  EMB_USAGE: { summary: 'bad command-line usage', hint: 'run `embers --help`', exit: 64 },
  EMB_CONFIG_INVALID: {
    summary: 'an option has an invalid value',
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
    hint: 'fix the field named in the message (see `embers fn deploy --help` and GET /openapi.json for the ranges)',
    exit: 65,
  },
  EMB_FUNCTION_QUEUE_FULL: {
    summary: 'every instance of the function is busy, maxInstances is reached and its request queue is full',
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
    hint: 'send `Authorization: Bearer <token>` with the EMBERS_API_TOKEN the daemon was started with',
    exit: 77,
  },
  EMB_API_ROUTE_NOT_FOUND: {
    summary: 'the API has no such route',
    hint: 'see GET /openapi.json for the routes',
    exit: 64,
  },
  EMB_API_BODY_TOO_LARGE: {
    summary: 'the request body is larger than the API accepts',
    hint: 'send a smaller body (see --body-limit of embers serve)',
    exit: 65,
  },
  EMB_API_UNREACHABLE: {
    summary: 'the embers daemon could not be reached',
    hint: 'start it with `embers serve` on this node, or point EMBERS_API at the node that runs it',
    exit: 69,
  },
  EMB_NODE_BUSY: {
    summary: 'another embers daemon already serves this home',
    hint: 'stop it first, use its API (EMBERS_API), or serve another --home',
    exit: 75,
  },
  EMB_INTERNAL: {
    summary: 'an internal error',
    hint: 'this is a bug in embers: please report it with the details',
    exit: 70,
  },
} as const satisfies AreaCatalogue<GeneralErrorDetails>;
