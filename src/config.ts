import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { EmbersError } from './errors.js';

/**
 * The one place for configuration. Every option has a documented default; `resolveConfig`
 * gives a compiled `Config` in which nothing is undefined.
 *
 * This is also the only module of src/ that reads the environment (`npm run lint` fails on
 * `process.env` anywhere else: scripts/check-env-reads.mjs). Every variable embers reads is a
 * field of `Environment`, below, with its meaning and default.
 */

/**
 * Every environment variable embers reads, typed, each with its default. `environment()`
 * reads them when asked (never cached: tests and the CLI set variables before a call) and
 * never throws: values that need checking (numbers, lists, URLs) are checked where they are
 * compiled, by `resolveConfig`, `s3Settings` and the option compilers of each layer, whose
 * errors name the variable.
 */
export interface Environment {
  /** EMBERS_HOME: the node's data directory. @default '/var/lib/embers' (see ConfigOptions.home) */
  readonly home: string | undefined;
  /** EMBERS_CACHE: the build cache of the guest kits. @default '/var/cache/embers' */
  readonly cacheDir: string | undefined;
  /** EMBERS_ACCEL: auto, kvm or tcg (checked by resolveConfig). @default 'auto' */
  readonly accel: string | undefined;
  /** EMBERS_RUN_DIR: the machine's registry of node claims, a tmpfs. @default '/run/embers' */
  readonly runDir: string;
  /** EMBERS_TSC_KHZ: the host TSC frequency in kHz, when the host cannot say (a positive
   * integer; anything else is ignored). @default measured (see guest/kernel-cmdline.ts) */
  readonly tscKhz: number | undefined;
  /** PATH: where host programs are looked up (plus the sbin dirs). @default '' */
  readonly path: string;
  /** Where registry credentials and plain-HTTP registries come from. */
  readonly registry: {
    /** EMBERS_REGISTRY_AUTH_FILE, else `$DOCKER_CONFIG/config.json`: a docker-style credentials file.
     * @default '~/.docker/config.json' */
    readonly authFile: string;
    /** EMBERS_INSECURE_REGISTRIES: registries reached over plain HTTP, comma-separated `host` or
     * `host:port` (set but empty: none). @default undefined (the registry client's list: localhost) */
    readonly insecure: readonly string[] | undefined;
  };
  /** The Firecracker driver (each also a --fc-* / --firecracker-bin flag; see FirecrackerConfigOptions). */
  readonly firecracker: {
    /** EMBERS_FIRECRACKER_BIN. @default undefined ('firecracker' on PATH) */
    readonly binary: string | undefined;
    /** EMBERS_FC_JAILER_UID: turns the jailer on, as this uid. @default undefined (no jailer) */
    readonly jailerUid: string | undefined;
    /** EMBERS_FC_JAILER_GID. @default undefined (the uid) */
    readonly jailerGid: string | undefined;
    /** EMBERS_FC_JAILER_BIN. @default undefined ('jailer' on PATH) */
    readonly jailerBinary: string | undefined;
    /** EMBERS_FC_CHROOT_BASE. @default undefined ('/srv/jailer') */
    readonly chrootBaseDir: string | undefined;
    /** EMBERS_FC_CGROUPS: `key=value;key=value`. @default undefined (none) */
    readonly cgroups: string | undefined;
    /** EMBERS_FC_PARENT_CGROUP. @default undefined (the jailer's: 'firecracker') */
    readonly parentCgroup: string | undefined;
    /** EMBERS_FC_VSOCK_CID. @default undefined (3) */
    readonly vsockCid: string | undefined;
    /** EMBERS_FC_DIFF_SNAPSHOTS: '1' turns dirty-page tracking on. @default false */
    readonly diffSnapshots: boolean;
  };
  /** The S3-compatible snapshot store, EMBERS_S3_*: trimmed, empty counts as unset (see s3Settings). */
  readonly s3: {
    /** EMBERS_S3_ENDPOINT. @default undefined (AWS S3) */
    readonly endpoint: string | undefined;
    /** EMBERS_S3_REGION. @default undefined ('us-east-1') */
    readonly region: string | undefined;
    /** EMBERS_S3_BUCKET. @default undefined (no remote store) */
    readonly bucket: string | undefined;
    /** EMBERS_S3_PREFIX: '' is the bucket root. @default undefined ('snapshots') */
    readonly prefix: string | undefined;
    /** EMBERS_S3_ACCESS_KEY_ID. @default undefined (the AWS SDK's chain) */
    readonly accessKeyId: string | undefined;
    /** EMBERS_S3_SECRET_ACCESS_KEY. @default undefined (the AWS SDK's chain) */
    readonly secretAccessKey: string | undefined;
  };
  /** The node daemon (`embers serve`) and its clients (`embers fn`, `--from-peer`). */
  readonly daemon: {
    /** EMBERS_API: the daemon `embers fn` talks to. @default undefined (http://127.0.0.1:7070) */
    readonly apiUrl: string | undefined;
    /** EMBERS_API_TOKEN: the bearer token of the API (needed off loopback). @default undefined (none) */
    readonly apiToken: string | undefined;
    /** EMBERS_PEER_TOKEN: the token peers send for snapshots. @default undefined (peer routes off) */
    readonly peerToken: string | undefined;
    /** EMBERS_PEERS: peer nodes whose snapshots cold starts may restore, comma-separated URLs. @default [] */
    readonly peers: readonly string[];
  };
  /** Fault points for the crash tests (util/crash-point.ts). */
  readonly faults: {
    /** EMBERS_CRASH_AT: `<point>[@n]` where the process kills itself. @default undefined */
    readonly crashAt: string | undefined;
    /** EMBERS_PAUSE_AT: `<point>[@n]` where the process waits for EMBERS_PAUSE_FILE. @default undefined */
    readonly pauseAt: string | undefined;
    /** EMBERS_PAUSE_FILE. @default undefined (no pause) */
    readonly pauseFile: string | undefined;
  };
}

/** A comma-separated list, entries trimmed, empty ones dropped. */
function listOf(text: string): string[] {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/** Reads every variable embers uses (see `Environment`) from `env`. */
export function environment(env: NodeJS.ProcessEnv = process.env): Environment {
  const s3 = (name: string) => (env[`EMBERS_S3_${name}`] ?? '').trim() || undefined;
  const tscKhz = Number(env.EMBERS_TSC_KHZ);
  return {
    home: env.EMBERS_HOME,
    cacheDir: env.EMBERS_CACHE,
    accel: env.EMBERS_ACCEL,
    runDir: env.EMBERS_RUN_DIR ?? '/run/embers',
    tscKhz: Number.isInteger(tscKhz) && tscKhz > 0 ? tscKhz : undefined,
    path: env.PATH ?? '',
    registry: {
      authFile: env.EMBERS_REGISTRY_AUTH_FILE || join(env.DOCKER_CONFIG ?? join(homedir(), '.docker'), 'config.json'),
      insecure: env.EMBERS_INSECURE_REGISTRIES === undefined ? undefined : listOf(env.EMBERS_INSECURE_REGISTRIES),
    },
    firecracker: {
      binary: env.EMBERS_FIRECRACKER_BIN,
      jailerUid: env.EMBERS_FC_JAILER_UID,
      jailerGid: env.EMBERS_FC_JAILER_GID,
      jailerBinary: env.EMBERS_FC_JAILER_BIN,
      chrootBaseDir: env.EMBERS_FC_CHROOT_BASE,
      cgroups: env.EMBERS_FC_CGROUPS,
      parentCgroup: env.EMBERS_FC_PARENT_CGROUP,
      vsockCid: env.EMBERS_FC_VSOCK_CID,
      diffSnapshots: env.EMBERS_FC_DIFF_SNAPSHOTS === '1',
    },
    s3: {
      endpoint: s3('ENDPOINT'),
      region: s3('REGION'),
      bucket: s3('BUCKET'),
      prefix: env.EMBERS_S3_PREFIX?.trim(),
      accessKeyId: s3('ACCESS_KEY_ID'),
      secretAccessKey: s3('SECRET_ACCESS_KEY'),
    },
    daemon: {
      apiUrl: env.EMBERS_API,
      apiToken: env.EMBERS_API_TOKEN,
      peerToken: env.EMBERS_PEER_TOKEN,
      peers: env.EMBERS_PEERS ? listOf(env.EMBERS_PEERS) : [],
    },
    faults: { crashAt: env.EMBERS_CRASH_AT, pauseAt: env.EMBERS_PAUSE_AT, pauseFile: env.EMBERS_PAUSE_FILE },
  };
}

/** The environment for a child process: this process's, with `extra` on top. */
export function childEnvironment(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...process.env, ...extra };
}

/** Where the S3-compatible snapshot store is (a subset of the S3 store's options). */
export interface S3Settings {
  endpoint?: string;
  region?: string;
  bucket: string;
  prefix?: string;
  credentials?: { accessKeyId: string; secretAccessKey: string };
}

/** The --s3-* flags of the CLI; each overrides its EMBERS_S3_* variable. */
export interface S3Flags {
  endpoint?: string;
  bucket?: string;
  region?: string;
  prefix?: string;
}

/**
 * The one parser of the S3 store's settings: flags first, then EMBERS_S3_ENDPOINT, _REGION,
 * _BUCKET, _PREFIX, _ACCESS_KEY_ID, _SECRET_ACCESS_KEY (credentials come only from the
 * environment). Undefined when nothing is set (no remote store); EMB_USAGE when flags are
 * given without a bucket, EMB_CONFIG_INVALID when the variables are incomplete.
 */
export function s3Settings(flags: S3Flags = {}, env: Environment = environment()): S3Settings | undefined {
  const fromFlags = Object.values(flags).some((v) => v !== undefined);
  const e = env.s3;
  const anySet = [e.endpoint, e.region, e.bucket, e.prefix || undefined, e.accessKeyId, e.secretAccessKey].some(
    (v) => v !== undefined,
  );
  if (!fromFlags && !anySet) return undefined;
  const bucket = flags.bucket ?? e.bucket;
  if (!bucket) {
    if (fromFlags)
      throw EmbersError.of('EMB_USAGE', {
        option: '--s3-bucket (or EMBERS_S3_BUCKET)',
        problem: 'is needed with the other --s3-* options',
      });
    throw EmbersError.of(
      'EMB_CONFIG_INVALID',
      { option: 'EMBERS_S3_BUCKET', problem: 'is not set, but other EMBERS_S3_* variables are' },
      { hint: 'set EMBERS_S3_BUCKET, or unset every EMBERS_S3_* variable' },
    );
  }
  if ((e.accessKeyId === undefined) !== (e.secretAccessKey === undefined)) {
    throw EmbersError.of(
      'EMB_CONFIG_INVALID',
      {
        option: e.accessKeyId === undefined ? 'EMBERS_S3_SECRET_ACCESS_KEY' : 'EMBERS_S3_ACCESS_KEY_ID',
        problem: 'is set without the other of the pair',
      },
      { hint: 'set both EMBERS_S3_ACCESS_KEY_ID and EMBERS_S3_SECRET_ACCESS_KEY, or neither' },
    );
  }
  return {
    endpoint: flags.endpoint ?? e.endpoint,
    region: flags.region ?? e.region,
    bucket,
    prefix: flags.prefix ?? e.prefix,
    credentials:
      e.accessKeyId && e.secretAccessKey
        ? { accessKeyId: e.accessKeyId, secretAccessKey: e.secretAccessKey }
        : undefined,
  };
}
export interface ConfigOptions {
  /** The node's data directory: everything a node stores lives below it.
   * @default EMBERS_HOME ?? '/var/lib/embers' */
  home?: string;
  /** Build cache for the guest kit (kernel, initramfs), shared by all homes on a machine.
   * @default EMBERS_CACHE ?? '/var/cache/embers' */
  cacheDir?: string;
  /** Accelerator: 'auto' picks KVM when it is hardware-backed, TCG otherwise.
   * @default EMBERS_ACCEL ?? 'auto' */
  accel?: 'auto' | 'kvm' | 'tcg';
  /** How long `run` waits for the function to answer on its port, in ms.
   * @default 60000 */
  readyTimeoutMs?: number;
  /** Firecracker driver settings (used only when Firecracker is the VMM). @default see FirecrackerConfigOptions */
  firecracker?: FirecrackerConfigOptions;
}

/** How this node runs Firecracker. Each field also has an EMBERS_FC_* variable and a --fc-* flag. */
export interface FirecrackerConfigOptions {
  /** Run Firecracker through the jailer (chroot, uid/gid, cgroup v2) instead of the private
   * mount namespace. On when a uid is given (--fc-jailer-uid, EMBERS_FC_JAILER_UID).
   * @default undefined (no jailer) */
  jailer?: {
    /** The jailer binary. @default EMBERS_FC_JAILER_BIN ?? 'jailer' (on PATH) */
    binary?: string;
    /** The uid Firecracker runs as. (EMBERS_FC_JAILER_UID) */
    uid: number;
    /** The gid Firecracker runs as. @default EMBERS_FC_JAILER_GID ?? the uid */
    gid?: number;
    /** Where jails are made; on the filesystem of the home (disks are hard-linked in).
     * @default EMBERS_FC_CHROOT_BASE ?? '/srv/jailer' */
    chrootBaseDir?: string;
    /** cgroup v2 settings for each VM, e.g. { 'cpu.max': '50000 100000' }.
     * @default EMBERS_FC_CGROUPS ("key=value;key=value") ?? {} */
    cgroups?: Record<string, string>;
    /** The parent cgroup of the VMs' cgroups. @default EMBERS_FC_PARENT_CGROUP ?? the jailer's ('firecracker') */
    parentCgroup?: string;
  };
  /** Give every VM (and clone) a vsock device with this guest CID; each clone's host socket
   * is `<instance dir>/vsock.sock`. The guest agent (restore fix-ups, `embers exec`) is reached
   * over it. @default EMBERS_FC_VSOCK_CID ?? 3 */
  vsockCid?: number;
  /** Track dirty pages so Diff snapshots can be taken (costs some guest write speed).
   * @default EMBERS_FC_DIFF_SNAPSHOTS === '1' */
  diffSnapshots?: boolean;
}

/** FirecrackerConfigOptions with every default applied (`jailer` stays undefined when off). */
export interface FirecrackerConfig {
  jailer:
    | {
        binary: string;
        uid: number;
        gid: number;
        chrootBaseDir: string;
        cgroups: Record<string, string>;
        parentCgroup?: string;
      }
    | undefined;
  vsockCid: number | undefined;
  diffSnapshots: boolean;
}

export interface Config {
  home: string;
  cacheDir: string;
  accel: 'auto' | 'kvm' | 'tcg';
  readyTimeoutMs: number;
  firecracker: FirecrackerConfig;
  paths: {
    images: string;
    instances: string;
    snapshots: string;
    net: string;
    tmp: string;
    guestCache: string;
  };
}

/** Parses a duration such as "10s", "500ms", "2m" or a number of milliseconds. */
export function parseDurationMs(value: string | number, option = 'duration'): number {
  if (typeof value === 'number') return value;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(value.trim());
  if (!m)
    throw EmbersError.of('EMB_CONFIG_INVALID', { option, value, problem: 'is not a duration (e.g. 500ms, 10s, 2m)' });
  const n = Number(m[1]);
  const unit = m[2] ?? 'ms';
  return Math.round(unit === 'ms' ? n : unit === 's' ? n * 1000 : n * 60_000);
}

export function resolveConfig(opts: ConfigOptions = {}): Config {
  const env = environment();
  const home = resolve(opts.home ?? env.home ?? '/var/lib/embers');
  const cacheDir = resolve(opts.cacheDir ?? env.cacheDir ?? '/var/cache/embers');
  const accel = opts.accel ?? (env.accel as Config['accel'] | undefined) ?? 'auto';
  if (!['auto', 'kvm', 'tcg'].includes(accel)) {
    throw EmbersError.of('EMB_CONFIG_INVALID', {
      option: opts.accel !== undefined ? 'accel' : 'EMBERS_ACCEL',
      value: accel,
      expected: 'auto, kvm or tcg',
    });
  }
  return {
    home,
    cacheDir,
    accel,
    readyTimeoutMs: opts.readyTimeoutMs ?? 60_000,
    firecracker: resolveFirecrackerConfig(opts.firecracker ?? {}, env.firecracker),
    paths: {
      images: join(home, 'images'),
      instances: join(home, 'instances'),
      snapshots: join(home, 'snapshots'),
      net: join(home, 'net'),
      tmp: join(home, 'tmp'),
      guestCache: join(cacheDir, 'guest'),
    },
  };
}

function intFrom(value: number | string | undefined, option: string, min: number, max: number): number | undefined {
  if (value === undefined || value === '') return undefined;
  const n = typeof value === 'number' ? value : Number(value);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw EmbersError.of('EMB_CONFIG_INVALID', { option, value, expected: `an integer from ${min} to ${max}` });
  }
  return n;
}

/** Parses "cpu.max=50000 100000;memory.max=268435456" (EMBERS_FC_CGROUPS, --fc-cgroup). */
export function parseCgroupSettings(text: string, option = 'EMBERS_FC_CGROUPS'): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of text
    .split(';')
    .map((p) => p.trim())
    .filter(Boolean)) {
    const m = /^([a-z0-9_]+\.[a-z0-9_.]+)=(.+)$/.exec(part);
    if (!m)
      throw EmbersError.of('EMB_CONFIG_INVALID', {
        option,
        value: part,
        problem: 'is not a cgroup v2 setting such as cpu.max=50000 100000',
      });
    out[m[1]] = m[2];
  }
  return out;
}

function resolveFirecrackerConfig(o: FirecrackerConfigOptions, env: Environment['firecracker']): FirecrackerConfig {
  const uid = intFrom(
    o.jailer?.uid ?? env.jailerUid,
    'the jailer uid (EMBERS_FC_JAILER_UID, --fc-jailer-uid)',
    0,
    2 ** 32 - 2,
  );
  // every Firecracker VM gets a vsock device by default: the guest agent listens on it
  const vsockCid =
    intFrom(o.vsockCid ?? env.vsockCid, 'the vsock guest CID (EMBERS_FC_VSOCK_CID, --fc-vsock-cid)', 3, 2 ** 32 - 2) ??
    3;
  const diffSnapshots = o.diffSnapshots ?? env.diffSnapshots;
  if (uid === undefined) return { jailer: undefined, vsockCid, diffSnapshots };
  const gid =
    intFrom(o.jailer?.gid ?? env.jailerGid, 'the jailer gid (EMBERS_FC_JAILER_GID, --fc-jailer-gid)', 0, 2 ** 32 - 2) ??
    uid;
  return {
    jailer: {
      binary: o.jailer?.binary ?? env.jailerBinary ?? 'jailer',
      uid,
      gid,
      chrootBaseDir: resolve(o.jailer?.chrootBaseDir ?? env.chrootBaseDir ?? '/srv/jailer'),
      cgroups: o.jailer?.cgroups ?? parseCgroupSettings(env.cgroups ?? ''),
      parentCgroup: o.jailer?.parentCgroup ?? env.parentCgroup,
    },
    vsockCid,
    diffSnapshots,
  };
}
