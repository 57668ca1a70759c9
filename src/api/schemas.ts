/**
 * JSON schemas of the API's requests and answers. Fastify validates requests with them,
 * serialises answers with them, and @fastify/swagger builds /openapi.json from them: the
 * OpenAPI document is generated, never written by hand.
 */
import { FUNCTION_DEFAULTS, FUNCTION_LIMITS } from '../node/functions.js';

const str = { type: 'string' } as const;
const int = { type: 'integer' } as const;
const num = { type: 'number' } as const;

export const errorSchema = {
  $id: 'Error',
  type: 'object',
  description: 'Every error: the EMB code (stable), what failed, and what to do',
  required: ['error'],
  properties: {
    error: {
      type: 'object',
      required: ['code', 'message', 'hint'],
      properties: { code: str, message: str, hint: str },
    },
  },
} as const;

const limit = (field: keyof typeof FUNCTION_LIMITS, description: string) => {
  const [minimum, maximum, integer] = FUNCTION_LIMITS[field];
  const def = (FUNCTION_DEFAULTS as Record<string, unknown>)[field];
  return {
    type: integer ? 'integer' : 'number',
    minimum,
    maximum,
    description: def === undefined ? description : `${description} (default ${String(def)})`,
  };
};

/** The spec a client sends (checked again, with the same limits and EMB codes, by node/functions.ts). */
export const functionSpecInputSchema = {
  $id: 'FunctionSpecInput',
  type: 'object',
  required: ['image'],
  additionalProperties: false,
  properties: {
    image: {
      type: 'string',
      minLength: 1,
      maxLength: 512,
      description: 'OCI image reference, or a local OCI layout path on the node',
    },
    vcpus: limit('vcpus', 'virtual CPUs'),
    memoryMiB: limit('memoryMiB', 'guest memory in MiB'),
    port: limit('port', 'the guest port the function serves HTTP on'),
    env: { type: 'array', items: { type: 'string' }, maxItems: 128, description: 'extra environment, NAME=value' },
    minInstances: limit('minInstances', 'instances kept warm'),
    maxInstances: limit('maxInstances', 'most instances at once'),
    concurrency: limit('concurrency', 'requests one instance serves at a time'),
    idleTimeoutSeconds: limit('idleTimeoutSeconds', 'an idle instance stops after this long'),
    snapshots: {
      type: 'string',
      enum: ['disabled', 'local', 'remote'],
      description: "snapshot mode (default: the node's)",
    },
    snapshotWhen: {
      type: 'string',
      enum: ['first-invocation', 'ready'],
      description: 'when a booted instance is snapshotted (default first-invocation)',
    },
    maxQueue: limit('maxQueue', 'requests that may wait beyond the capacity being started'),
    requestTimeoutSeconds: limit('requestTimeoutSeconds', 'how long a request may wait for an instance'),
    restoreHook: {
      type: 'object',
      required: ['path'],
      additionalProperties: false,
      description:
        "run in the guest after every restore, before the clone takes traffic; its failure fails the restore (default: the image's org.embers.restore-hook label)",
      properties: {
        path: { type: 'string', pattern: '^/', maxLength: 4096, description: 'an absolute path in the image' },
        timeoutMs: { type: 'integer', minimum: 1, maximum: 3600000, description: 'default 30000' },
      },
    },
  },
} as const;

const functionSpecSchema = {
  type: 'object',
  properties: {
    image: str,
    vcpus: int,
    memoryMiB: int,
    port: int,
    env: { type: 'array', items: str },
    minInstances: int,
    maxInstances: int,
    concurrency: int,
    idleTimeoutSeconds: num,
    snapshots: str,
    snapshotWhen: str,
    maxQueue: int,
    requestTimeoutSeconds: num,
    restoreHook: { type: 'object', properties: { path: str, timeoutMs: int } },
  },
} as const;

export const instanceSchema = {
  $id: 'Instance',
  type: 'object',
  properties: {
    name: str,
    function: str,
    revision: str,
    origin: { type: 'string', enum: ['boot', 'restore'] },
    snapshotId: str,
    state: { type: 'string', enum: ['starting', 'idle', 'busy', 'snapshotting', 'stopping'] },
    activeRequests: int,
    servedRequests: int,
    cloneIp: str,
    createdAt: str,
    startMs: num,
  },
} as const;

export const functionSchema = {
  $id: 'Function',
  type: 'object',
  properties: {
    name: str,
    spec: functionSpecSchema,
    revision: { type: 'object', properties: { id: str, manifestDigest: str, createdAt: str } },
    createdAt: str,
    updatedAt: str,
    instances: { type: 'array', items: { $ref: 'Instance#' } },
    queued: int,
    snapshot: {
      type: 'object',
      properties: { state: { type: 'string', enum: ['none', 'creating', 'ready', 'failed'] }, id: str, error: str },
    },
  },
} as const;

export const snapshotSchema = {
  $id: 'Snapshot',
  type: 'object',
  properties: {
    id: str,
    createdAt: str,
    sizeBytes: int,
    image: str,
    manifestDigest: str,
    functions: { type: 'array', items: str, description: 'functions whose current revision this snapshot serves' },
  },
} as const;

/** POST /v1/instances/{name}/exec: a command for the guest agent. */
export const execRequestSchema = {
  $id: 'ExecRequest',
  type: 'object',
  required: ['argv'],
  additionalProperties: false,
  properties: {
    argv: {
      type: 'array',
      minItems: 1,
      maxItems: 255,
      items: { type: 'string', maxLength: 65536 },
      description:
        'the command and its arguments, passed as they are (no shell); with shell, one item: a script for sh -c',
    },
    shell: {
      type: 'boolean',
      description: "run argv[0] as a script with the guest kit's busybox sh -c (default false)",
    },
    kitRoot: {
      type: 'boolean',
      description:
        "run in the guest kit's root (the function's disk at /newroot) instead of the function's (default false)",
    },
    timeoutSeconds: {
      type: 'number',
      minimum: 0.001,
      maximum: 3600,
      description: "the command's process group is killed after this long (default 60)",
    },
  },
} as const;

export const execResultSchema = {
  $id: 'ExecResult',
  type: 'object',
  properties: {
    state: {
      type: 'string',
      enum: ['exited', 'signaled', 'timeout', 'not-started'],
      description: 'how the command ended',
    },
    code: { type: 'integer', description: 'exit status (exited), signal (signaled), errno (not-started)' },
    exitCode: {
      type: 'integer',
      description: 'as a shell reports it: the status, 128+signal, 124 timed out, 127 not started',
    },
    stdout: { type: 'string', description: 'standard output (UTF-8; at most 1 MiB kept)' },
    stderr: { type: 'string', description: 'standard error (UTF-8; at most 1 MiB kept)' },
    truncated: { type: 'boolean', description: 'output beyond 1 MiB per stream was dropped' },
  },
} as const;

export const SHARED_SCHEMAS = [
  errorSchema,
  instanceSchema,
  functionSchema,
  snapshotSchema,
  functionSpecInputSchema,
  execRequestSchema,
  execResultSchema,
];

export const errorRef = { $ref: 'Error#' } as const;
export const nameParams = {
  type: 'object',
  required: ['name'],
  properties: { name: { type: 'string', pattern: '^[a-z][a-z0-9-]{0,39}$', description: 'function name' } },
} as const;
export const instanceParams = {
  type: 'object',
  required: ['name'],
  properties: { name: { type: 'string', pattern: '^[a-z0-9][a-z0-9_.-]{0,62}$', description: 'instance name' } },
} as const;
export const noQuery = { type: 'object', additionalProperties: false, properties: {} } as const;
