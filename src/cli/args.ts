import { parseArgs, type ParseArgsConfig } from 'node:util';
import { EmbersError } from '../errors.js';

type Options = NonNullable<ParseArgsConfig['options']>;

/** Options every command takes. */
export const GLOBAL_OPTIONS = {
  home: { type: 'string' },
  json: { type: 'boolean', default: false },
  accel: { type: 'string' },
  vmm: { type: 'string' },
  'firecracker-bin': { type: 'string' },
  snapshots: { type: 'string' },
  'guest-kernel': { type: 'string' },
  'qemu-cpu': { type: 'string' },
  'device-discovery': { type: 'string' },
  'cache-snapshots': { type: 'string' },
  's3-endpoint': { type: 'string' },
  's3-bucket': { type: 'string' },
  's3-region': { type: 'string' },
  's3-prefix': { type: 'string' },
  'net-pool-size': { type: 'string' },
  'fc-jailer-uid': { type: 'string' },
  'fc-jailer-gid': { type: 'string' },
  'fc-jailer-bin': { type: 'string' },
  'fc-chroot-base': { type: 'string' },
  'fc-cgroup': { type: 'string', multiple: true },
  'fc-parent-cgroup': { type: 'string' },
  'fc-vsock-cid': { type: 'string' },
  'fc-diff-snapshots': { type: 'boolean' },
  help: { type: 'boolean', short: 'h', default: false },
} as const satisfies Options;

export function parse<T extends Options>(argv: string[], options: T) {
  try {
    return parseArgs({ args: argv, options: { ...GLOBAL_OPTIONS, ...options }, allowPositionals: true, strict: true });
  } catch (err) {
    throw EmbersError.of('EMB_USAGE', { reason: (err as Error).message, argv }, { cause: err });
  }
}

export function intOption(
  value: string | undefined,
  name: string,
  fallback: number,
  min = 1,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!/^\s*-?\d+\s*$/.test(value) || !Number.isSafeInteger(n) || n < min || n > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `≥ ${min}` : `from ${min} to ${max}`;
    throw EmbersError.of('EMB_USAGE', { option: `--${name}`, value, expected: `an integer ${range}` });
  }
  return n;
}
