/**
 * The inputs of a guest kit, found by local look-ups only (apt-cache, dpkg-query, file
 * hashes): the kernel package (or the kernel source package and Firecracker's config),
 * busybox-static, the init, exec helper and agent sources, the module list. Their hash is
 * the kit's cache key.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { EmbersError } from '../errors.js';
import { sha256, writeJsonAtomic } from '../util/fs.js';
import { candidateVersion, installedVersion, resolveKernelPackage, type KernelPackage } from './apt.js';
import { LINUX_SOURCE_PACKAGE } from './firecracker-kernel.js';
import { DEBIAN_MODULES, isStaticElf, readGuestSources } from './initramfs.js';
import { firecrackerConfigPath, firecrackerOverridesPath } from './paths.js';
import { KIT_FORMAT, type BusyboxInput, type GuestKitKind, type KitInputs, type Resolved } from './kit-layout.js';

const BUSYBOX_PACKAGE = 'busybox-static';

async function busyboxInput(): Promise<BusyboxInput> {
  const installed = await installedVersion(BUSYBOX_PACKAGE);
  if (installed) {
    try {
      const head = await readFile('/bin/busybox');
      if (isStaticElf(head)) return { package: BUSYBOX_PACKAGE, version: installed, from: '/bin/busybox' };
    } catch {
      /* fall through to a download */
    }
  }
  return { package: BUSYBOX_PACKAGE, version: await candidateVersion(BUSYBOX_PACKAGE), from: 'download' };
}

/**
 * What the package look-ups depend on: apt's lists (apt-get update renames files into the
 * lists folder, changing its mtime) and dpkg's status (package installs).
 */
async function aptStamp(): Promise<string> {
  const parts: string[] = [];
  for (const p of ['/var/lib/apt/lists', '/var/lib/dpkg/status', '/etc/apt/preferences.d']) {
    try {
      const st = await stat(p);
      parts.push(`${p}:${st.mtimeMs}:${st.size}`);
    } catch {
      parts.push(`${p}:-`);
    }
  }
  return parts.join(';');
}

interface PackageMemo {
  stamp: string;
  busybox: BusyboxInput;
  kernelPackage?: KernelPackage;
  sourceVersion?: string;
}

/**
 * apt-cache takes about a second per call here (no package cache file), so the package
 * look-ups are memoised in <cacheDir>/.packages-<kind>.json until apt's lists or dpkg's
 * status change.
 */
async function lookupPackages(kind: GuestKitKind, cacheDir: string): Promise<PackageMemo> {
  const memoPath = join(cacheDir, `.packages-${kind}.json`);
  const stamp = await aptStamp();
  try {
    const memo = JSON.parse(await readFile(memoPath, 'utf8')) as PackageMemo;
    if (memo.stamp === stamp && memo.busybox && (kind === 'debian' ? memo.kernelPackage : memo.sourceVersion))
      return memo;
  } catch {
    /* no memo yet */
  }
  const memo: PackageMemo = { stamp, busybox: await busyboxInput() };
  if (kind === 'debian') memo.kernelPackage = await resolveKernelPackage();
  else memo.sourceVersion = await candidateVersion(LINUX_SOURCE_PACKAGE);
  try {
    await writeJsonAtomic(memoPath, memo);
  } catch {
    /* a read-only cache still works, only slower */
  }
  return memo;
}

/** Resolves the inputs of a kit (local look-ups only: apt-cache, dpkg-query, file hashes). */
export async function resolveInputs(kind: GuestKitKind, cacheDir: string): Promise<Resolved> {
  if (kind !== 'debian' && kind !== 'firecracker-config') {
    throw EmbersError.of('EMB_CONFIG_INVALID', {
      option: 'guest kit kind',
      value: kind,
      expected: 'debian or firecracker-config',
    });
  }
  const sources = await readGuestSources();
  const headers = Object.fromEntries(sources.headers.map((h) => [h.name, sha256(h.data)]));
  const memo = await lookupPackages(kind, cacheDir);
  const busybox = memo.busybox;
  let inputs: KitInputs;
  let kernelPackage: KernelPackage | undefined;
  if (kind === 'debian') {
    kernelPackage = memo.kernelPackage!;
    inputs = {
      format: KIT_FORMAT,
      kind,
      kernel: {
        package: kernelPackage.name,
        version: kernelPackage.version,
        meta: { package: kernelPackage.meta.name, version: kernelPackage.meta.version },
      },
      kernelVersion: kernelPackage.kernelVersion,
      busybox,
      init: sha256(sources.init),
      execHelper: sha256(sources.execSource),
      agent: sha256(sources.agentSource),
      headers,
      modules: [...DEBIAN_MODULES],
    };
  } else {
    const config = Buffer.concat([
      await readFile(firecrackerConfigPath()),
      Buffer.from('\n'),
      await readFile(firecrackerOverridesPath()),
    ]);
    inputs = {
      format: KIT_FORMAT,
      kind,
      kernel: { package: LINUX_SOURCE_PACKAGE, version: memo.sourceVersion!, config: sha256(config) },
      busybox,
      init: sha256(sources.init),
      execHelper: sha256(sources.execSource),
      agent: sha256(sources.agentSource),
      headers,
      modules: [],
    };
  }
  const key = sha256(JSON.stringify(inputs)).slice(0, 16);
  return { inputs, key, sources, kernelPackage };
}
