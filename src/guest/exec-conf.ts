/**
 * /embers/exec.conf: how the guest helper (init/embers-exec.c) learns what to run.
 *
 * Format (version 1), UTF-8 text, one `key=value` per line, LF line ends:
 *
 *     version=1
 *     workdir=/srv
 *     user=65534:65534
 *     hostname=fn-1            (optional)
 *     arg=/bin/busybox         (repeated, in order: argv[0], argv[1], …)
 *     env=PATH=/usr/bin:/bin   (repeated, in order)
 *
 * The key ends at the first `=`; the value is the rest of the line, escaped: a backslash is
 * written `\\`, a line feed `\n`, a carriage return `\r`. No other escape exists (a backslash
 * followed by anything else is an error). Lines starting with `#` and empty lines are ignored.
 * NUL bytes cannot be represented (they cannot be in argv or env either).
 * The C parser in init/embers-exec.c must stay in step with this file.
 */
import { EmbersError } from '../errors.js';

/** What the guest runs: checked by run-config.ts's validateRunConfig, written to exec.conf here. */
export interface GuestRunConfig {
  /** Entrypoint + cmd, already combined; argv[0] is resolved inside the rootfs (PATH lookup using env PATH if not absolute). */
  argv: string[];
  /** "K=V" entries: exactly the function's environment (the guest adds PATH if none is given, and HOME from /etc/passwd if none is given). */
  env: string[];
  /** Default "/". Must exist in the rootfs. */
  workingDir: string;
  /** "" | "name" | "uid" | "uid:gid" | "name:group" — resolved against the rootfs's /etc/passwd and /etc/group inside the guest. */
  user: string;
  hostname?: string;
}

export const EXEC_CONF_VERSION = 1;
/** Path of the file inside the initramfs. */
export const EXEC_CONF_PATH = 'embers/exec.conf';

export function escapeValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/\r/g, '\\r');
}

export function unescapeValue(value: string): string {
  let out = '';
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (c !== '\\') {
      out += c;
      continue;
    }
    const next = value[++i];
    if (next === '\\') out += '\\';
    else if (next === 'n') out += '\n';
    else if (next === 'r') out += '\r';
    else throw EmbersError.of('EMB_GUEST_RUN_CONFIG_INVALID', { problem: 'exec-conf-escape', value, escape: next });
  }
  return out;
}

/** Serialises a run configuration. Does not validate: see `validateRunConfig`. */
export function encodeExecConf(config: GuestRunConfig): string {
  const lines = [
    `version=${EXEC_CONF_VERSION}`,
    `workdir=${escapeValue(config.workingDir || '/')}`,
    `user=${escapeValue(config.user)}`,
  ];
  if (config.hostname !== undefined && config.hostname !== '') lines.push(`hostname=${escapeValue(config.hostname)}`);
  for (const a of config.argv) lines.push(`arg=${escapeValue(a)}`);
  for (const e of config.env) lines.push(`env=${escapeValue(e)}`);
  return `${lines.join('\n')}\n`;
}

/** Parses exec.conf text (the inverse of `encodeExecConf`). */
export function decodeExecConf(text: string): GuestRunConfig {
  const config: GuestRunConfig = { argv: [], env: [], workingDir: '/', user: '' };
  let version: number | undefined;
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq < 1) throw EmbersError.of('EMB_GUEST_RUN_CONFIG_INVALID', { problem: 'exec-conf-line', line });
    const key = line.slice(0, eq);
    const value = unescapeValue(line.slice(eq + 1));
    switch (key) {
      case 'version':
        version = Number(value);
        break;
      case 'workdir':
        config.workingDir = value;
        break;
      case 'user':
        config.user = value;
        break;
      case 'hostname':
        config.hostname = value;
        break;
      case 'arg':
        config.argv.push(value);
        break;
      case 'env':
        config.env.push(value);
        break;
      default:
        // unknown keys are ignored (forward compatibility), as the C parser does
        break;
    }
  }
  if (version !== EXEC_CONF_VERSION) {
    throw EmbersError.of('EMB_GUEST_RUN_CONFIG_INVALID', { problem: 'exec-conf-version', version });
  }
  return config;
}
