/**
 * The Debian package plumbing of the guest kit: version look-ups (local, no network),
 * downloads (`apt-get download`, nothing installed) and extraction (`dpkg -x`).
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { EmbersError, isEmbersError } from '../errors.js';
import { run } from '../util/exec.js';

const APT_HINT =
  'run `apt-get update` (the package lists may be missing or stale), check that deb.debian.org is reachable, then `embers guest build` again';

const APT = { hint: APT_HINT };

/** The candidate version apt would install, from `apt-cache policy`. */
export async function candidateVersion(pkg: string): Promise<string> {
  const { stdout } = await run('apt-cache', ['policy', pkg]);
  const m = /^\s*Candidate:\s*(\S+)/m.exec(stdout);
  if (!m || m[1] === '(none)')
    throw EmbersError.of(
      'EMB_GUEST_BUILD_FAILED',
      { problem: 'package-unknown', pkg, policy: stdout.slice(0, 2000) },
      APT,
    );
  return m[1];
}

/** The installed version of `pkg`, or undefined if it is not installed. */
export async function installedVersion(pkg: string): Promise<string | undefined> {
  try {
    const { stdout } = await run('dpkg-query', ['-W', '-f=${Status}\t${Version}', pkg]);
    const [status, version] = stdout.split('\t');
    return status?.endsWith(' installed') && version ? version : undefined;
  } catch (err) {
    if (isEmbersError(err, 'EMB_HOST_COMMAND_FAILED')) return undefined;
    throw err;
  }
}

/** One field of `apt-cache show pkg=version` (first stanza). */
export async function packageField(pkg: string, version: string, field: string): Promise<string | undefined> {
  const { stdout } = await run('apt-cache', ['show', `${pkg}=${version}`]);
  const stanza = stdout.split(/\n\n/)[0] ?? '';
  const re = new RegExp(`^${field}:\\s*(.*(?:\\n[ \\t].*)*)`, 'm');
  const m = re.exec(stanza);
  return m ? m[1].replace(/\n[ \t]+/g, ' ').trim() : undefined;
}

export interface KernelPackage {
  /** The meta package (linux-image-amd64) and its candidate version. */
  meta: { name: string; version: string };
  /** The versioned image package it depends on, e.g. linux-image-6.1.0-57-amd64. */
  name: string;
  version: string;
  /** e.g. 6.1.0-57-amd64 (the modules directory name, `uname -r`). */
  kernelVersion: string;
}

/**
 * Resolves `linux-image-amd64` to the versioned image package its candidate depends on
 * (like `apt-cache depends`, but for the candidate version and with the exact version).
 */
export async function resolveKernelPackage(meta = 'linux-image-amd64'): Promise<KernelPackage> {
  const metaVersion = await candidateVersion(meta);
  const depends = await packageField(meta, metaVersion, 'Depends');
  if (!depends) throw EmbersError.of('EMB_GUEST_BUILD_FAILED', { problem: 'depends-missing', meta, metaVersion }, APT);
  for (const alt of depends.split(/[,|]/)) {
    const m = /^\s*(linux-image-(\d+\.\d+[^\s(]*?)-amd64(?:-unsigned)?)\s*(?:\(\s*=\s*([^)\s]+)\s*\))?\s*$/.exec(alt);
    if (!m) continue;
    const name = m[1];
    const version = m[3] ?? (await candidateVersion(name));
    return { meta: { name: meta, version: metaVersion }, name, version, kernelVersion: `${m[2]}-amd64` };
  }
  throw EmbersError.of(
    'EMB_GUEST_BUILD_FAILED',
    { problem: 'kernel-package-unknown', meta, metaVersion, depends },
    APT,
  );
}

/** `apt-get download name=version …` into `dir`; returns the .deb paths in the order asked. */
export async function downloadPackages(dir: string, pkgs: { name: string; version: string }[]): Promise<string[]> {
  try {
    // _apt cannot write into a private temp dir: download as root without the sandbox warning
    await run(
      'apt-get',
      ['-q', '-o', 'APT::Sandbox::User=root', 'download', ...pkgs.map((p) => `${p.name}=${p.version}`)],
      {
        cwd: dir,
        timeoutMs: 30 * 60_000,
      },
    );
  } catch (err) {
    throw EmbersError.of(
      'EMB_GUEST_BUILD_FAILED',
      {
        problem: 'download-failed',
        pkgs,
        stderr: isEmbersError(err, 'EMB_HOST_COMMAND_FAILED') ? err.details.stderr : undefined,
      },
      { ...APT, cause: err },
    );
  }
  const files = await readdir(dir);
  return pkgs.map((p) => {
    const debVersion = p.version.replace(/:/g, '%3a');
    const f = files.find(
      (x) =>
        x.startsWith(`${p.name}_`) &&
        x.endsWith('.deb') &&
        (x.includes(`_${debVersion}_`) || x.includes(`_${p.version}_`)),
    );
    if (!f)
      throw EmbersError.of(
        'EMB_GUEST_BUILD_FAILED',
        { problem: 'deb-missing', pkg: `${p.name}=${p.version}`, pkgs, files },
        APT,
      );
    return join(dir, f);
  });
}

/** `dpkg -x deb dir`: unpacks the package's files without installing it. */
export async function extractPackage(deb: string, dir: string): Promise<void> {
  await run('dpkg', ['-x', deb, dir], { timeoutMs: 30 * 60_000 });
}
