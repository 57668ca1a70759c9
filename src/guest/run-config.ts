/**
 * The per-instance part of the guest boot: an initramfs made of the shared base initramfs
 * (kernel modules, busybox, init, the exec helper) followed by a tiny uncompressed newc
 * archive holding /embers/exec.conf, the function's argv, env, user and working directory.
 * The kernel unpacks concatenated archives in order, so the base is never rebuilt.
 */
import { randomBytes } from 'node:crypto';
import { copyFile, open, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { EmbersError } from '../errors.js';
import { writeCpio } from './cpio.js';
import { encodeExecConf, EXEC_CONF_PATH, type GuestRunConfig } from './exec-conf.js';

export type { GuestRunConfig } from './exec-conf.js';

/** Checks a run configuration; returns it with defaults filled in (workingDir "/"). */
export function validateRunConfig(config: GuestRunConfig): GuestRunConfig {
  if (
    !Array.isArray(config.argv) ||
    config.argv.length === 0 ||
    typeof config.argv[0] !== 'string' ||
    config.argv[0] === ''
  ) {
    throw EmbersError.of('EMB_GUEST_RUN_CONFIG_INVALID', { problem: 'no-command', argv: config.argv });
  }
  for (const a of config.argv) {
    if (typeof a !== 'string')
      throw EmbersError.of('EMB_GUEST_RUN_CONFIG_INVALID', { problem: 'argument-not-string', argv: config.argv });
    if (a.includes('\0')) throw EmbersError.of('EMB_GUEST_RUN_CONFIG_INVALID', { problem: 'argument-nul', arg: a });
  }
  for (const e of config.env ?? []) {
    if (typeof e !== 'string' || e.indexOf('=') < 1)
      throw EmbersError.of('EMB_GUEST_RUN_CONFIG_INVALID', { problem: 'env-not-key-value', env: e });
    if (e.includes('\0')) throw EmbersError.of('EMB_GUEST_RUN_CONFIG_INVALID', { problem: 'env-nul', env: e });
  }
  const workingDir = config.workingDir === undefined || config.workingDir === '' ? '/' : config.workingDir;
  if (!workingDir.startsWith('/') || workingDir.includes('\0') || /[\n\r]/.test(workingDir)) {
    throw EmbersError.of('EMB_GUEST_RUN_CONFIG_INVALID', { problem: 'working-dir-not-absolute', workingDir });
  }
  const user = config.user ?? '';
  if (!/^[^:\s\0]*(:[^:\s\0]+)?$/.test(user)) {
    throw EmbersError.of('EMB_GUEST_RUN_CONFIG_INVALID', { problem: 'user-format', user });
  }
  for (const part of user.split(':')) {
    if (/^\d+$/.test(part) && Number(part) > 0xfffffffe)
      throw EmbersError.of('EMB_GUEST_RUN_CONFIG_INVALID', { problem: 'user-id-range', user, id: part });
  }
  if (config.hostname !== undefined && config.hostname !== '') {
    if (!/^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})$/.test(config.hostname)) {
      throw EmbersError.of('EMB_GUEST_RUN_CONFIG_INVALID', { problem: 'hostname', hostname: config.hostname });
    }
  }
  return {
    argv: [...config.argv],
    env: [...(config.env ?? [])],
    workingDir,
    user,
    ...(config.hostname ? { hostname: config.hostname } : {}),
  };
}

/** The uncompressed newc archive carrying /embers/exec.conf for `config`. */
export function instanceArchive(config: GuestRunConfig): Buffer {
  const conf = encodeExecConf(validateRunConfig(config));
  return writeCpio([
    { type: 'dir', name: 'embers', mode: 0o755 },
    { type: 'file', name: EXEC_CONF_PATH, mode: 0o600, data: conf },
  ]);
}

/**
 * Writes `outPath` = the bytes of `baseInitrd`, zero padding to a 4-byte boundary (the
 * kernel looks for an uncompressed archive only at aligned offsets), then the instance
 * archive. Written to a temp file and renamed, so `outPath` is never seen half-written.
 */
export async function buildInstanceInitrd(baseInitrd: string, config: GuestRunConfig, outPath: string): Promise<void> {
  const archive = instanceArchive(config);
  let baseSize: number;
  try {
    baseSize = (await stat(baseInitrd)).size;
  } catch (err) {
    throw EmbersError.of(
      'EMB_GUEST_KERNEL_MISSING',
      { baseInitrd },
      { cause: err, hint: 'run `embers guest build` to (re)build the guest kit' },
    );
  }
  const tmp = join(dirname(outPath), `.${basename(outPath)}.tmp-${randomBytes(6).toString('hex')}`);
  try {
    await copyFile(baseInitrd, tmp);
    const fh = await open(tmp, 'r+');
    try {
      const pad = Buffer.alloc((4 - (baseSize % 4)) % 4);
      await fh.write(Buffer.concat([pad, archive]), 0, pad.length + archive.length, baseSize);
    } finally {
      await fh.close();
    }
    await rename(tmp, outPath);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}
