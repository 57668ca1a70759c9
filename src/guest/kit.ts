/**
 * The guest kit: the kernel (ELF vmlinux) and base initramfs every embers guest boots.
 * Built once per set of inputs and cached:
 *
 *     <cacheDir>/<kind>-<cacheKey>/
 *         vmlinux       ELF kernel, boots with QEMU `-kernel` (PVH) and Firecracker
 *         initrd.img    gzip newc initramfs: busybox, /init, /sbin/embers-exec, modules
 *         kit.json      manifest: inputs, kernel version, module list, sizes, sha256s
 *     <cacheDir>/.tmp-<kind>-<cacheKey>-XXXXXX/    a kit being built (renamed when complete)
 *     <cacheDir>/.work-<kind>-<cacheKey>-XXXXXX/   downloads and scratch (removed after)
 *
 *     <cacheDir>/.kernel-firecracker-config-<kernelKey>/   (firecracker-config only)
 *         vmlinux, kernel.json   the compiled kernel, keyed by its own inputs (source package
 *                               version, config and overrides), so a change to the init or
 *                               the exec helper rebuilds the initramfs in seconds, not the
 *                               kernel in 20 minutes
 *
 * The cache key hashes every input: the kernel package and version (or the kernel source
 * package version and the config with embers' overrides), busybox-static's version, the init
 * script, exec helper and guest agent sources, the module list and the kit format. A kit is published by renaming its finished
 * temp dir, so a crash never leaves a half kit visible; two concurrent builders both finish
 * and the second rename loses harmlessly.
 */
import { chmod, copyFile, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { EmbersError, isEmbersError } from '../errors.js';
import { requireTool, run } from '../util/exec.js';
import { exists, fsyncPath, makeTempDir, sha256, sha256File, writeJsonAtomic } from '../util/fs.js';
import { candidateVersion, downloadPackages, extractPackage, installedVersion, resolveKernelPackage, type KernelPackage } from './apt.js';
import { buildFirecrackerKernel, LINUX_SOURCE_PACKAGE } from './firecracker-kernel.js';
import { buildBaseInitramfs, compileExecHelper, DEBIAN_MODULES, isStaticElf, loadModule, readGuestSources, resolveModules } from './initramfs.js';
import { firecrackerConfigPath, firecrackerOverridesPath } from './paths.js';
import { buildCmdlineVirtioMmio } from './virtio-mmio-module.js';
import { assertVmlinux, extractVmlinux, isX86_64Elf, readElfHeader } from './vmlinux.js';

export interface GuestKit {
  /** ELF vmlinux. */
  kernelPath: string;
  /** Base initramfs (gzip newc cpio). */
  initrdPath: string;
  /** e.g. "6.1.0-57-amd64". */
  kernelVersion: string;
  kind: 'debian' | 'firecracker-config';
  /** Hash of the inputs. */
  cacheKey: string;
}

export type GuestKitKind = GuestKit['kind'];

/** Bump when the kit layout or the way it is built changes (it is part of the cache key). */
export const KIT_FORMAT = 3;
const MANIFEST = 'kit.json';
const KERNEL_FILE = 'vmlinux';
const INITRD_FILE = 'initrd.img';
const STALE_MS = 6 * 3600_000;
const BUSYBOX_PACKAGE = 'busybox-static';

interface BusyboxInput {
  package: string;
  version: string;
  /** '/bin/busybox' when busybox-static is installed on the host, 'download' otherwise. */
  from: string;
}

interface KitInputs {
  format: number;
  kind: GuestKitKind;
  kernel: { package: string; version: string; meta?: { package: string; version: string }; config?: string };
  kernelVersion?: string;
  busybox: BusyboxInput;
  init: string;
  execHelper: string;
  /** sha256 of the guest agent's source. */
  agent: string;
  modules: string[];
}

interface KitManifest {
  format: number;
  kind: GuestKitKind;
  cacheKey: string;
  kernelVersion: string;
  kernel: string;
  initrd: string;
  inputs: KitInputs;
  modules: string[];
  sizes: { kernel: number; initrd: number };
  sha256: { kernel: string; initrd: string };
  builtAt: string;
  buildSeconds: number;
}

interface Resolved {
  inputs: KitInputs;
  key: string;
  sources: { init: Buffer; execSource: Buffer; agentSource: Buffer };
  kernelPackage?: KernelPackage;
}

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
    if (memo.stamp === stamp && memo.busybox && (kind === 'debian' ? memo.kernelPackage : memo.sourceVersion)) return memo;
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
async function resolveInputs(kind: GuestKitKind, cacheDir: string): Promise<Resolved> {
  if (kind !== 'debian' && kind !== 'firecracker-config') {
    throw new EmbersError('EMB_CONFIG_INVALID', `unknown guest kit kind "${String(kind)}" (debian or firecracker-config)`, { kind });
  }
  const sources = await readGuestSources();
  const memo = await lookupPackages(kind, cacheDir);
  const busybox = memo.busybox;
  let inputs: KitInputs;
  let kernelPackage: KernelPackage | undefined;
  if (kind === 'debian') {
    kernelPackage = memo.kernelPackage!;
    inputs = {
      format: KIT_FORMAT,
      kind,
      kernel: { package: kernelPackage.name, version: kernelPackage.version, meta: { package: kernelPackage.meta.name, version: kernelPackage.meta.version } },
      kernelVersion: kernelPackage.kernelVersion,
      busybox,
      init: sha256(sources.init),
      execHelper: sha256(sources.execSource),
      agent: sha256(sources.agentSource),
      modules: [...DEBIAN_MODULES],
    };
  } else {
    const config = Buffer.concat([await readFile(firecrackerConfigPath()), Buffer.from('\n'), await readFile(firecrackerOverridesPath())]);
    inputs = {
      format: KIT_FORMAT,
      kind,
      kernel: { package: LINUX_SOURCE_PACKAGE, version: memo.sourceVersion!, config: sha256(config) },
      busybox,
      init: sha256(sources.init),
      execHelper: sha256(sources.execSource),
      agent: sha256(sources.agentSource),
      modules: [],
    };
  }
  const key = sha256(JSON.stringify(inputs)).slice(0, 16);
  return { inputs, key, sources, kernelPackage };
}

/** Reads and checks a published kit; undefined if `dir` holds no complete kit for `key`. */
export async function readGuestKit(dir: string, expect?: { kind?: GuestKitKind; cacheKey?: string }): Promise<GuestKit | undefined> {
  let manifest: KitManifest;
  try {
    manifest = JSON.parse(await readFile(join(dir, MANIFEST), 'utf8')) as KitManifest;
  } catch {
    return undefined;
  }
  if (manifest.format !== KIT_FORMAT) return undefined;
  if (expect?.kind && manifest.kind !== expect.kind) return undefined;
  if (expect?.cacheKey && manifest.cacheKey !== expect.cacheKey) return undefined;
  const kernelPath = join(dir, manifest.kernel);
  const initrdPath = join(dir, manifest.initrd);
  try {
    const [k, i] = await Promise.all([stat(kernelPath), stat(initrdPath)]);
    if (k.size !== manifest.sizes.kernel || i.size !== manifest.sizes.initrd) return undefined;
  } catch {
    return undefined;
  }
  if (!isX86_64Elf(await readElfHeader(kernelPath))) return undefined;
  return { kernelPath, initrdPath, kernelVersion: manifest.kernelVersion, kind: manifest.kind, cacheKey: manifest.cacheKey };
}

/** Removes temp and work dirs older than STALE_MS (left by crashed builds). */
async function removeStale(cacheDir: string): Promise<void> {
  const names = await readdir(cacheDir).catch(() => [] as string[]);
  const now = Date.now();
  for (const name of names) {
    if (!name.startsWith('.tmp-') && !name.startsWith('.work-')) continue;
    try {
      const st = await stat(join(cacheDir, name));
      if (now - st.mtimeMs > STALE_MS) await rm(join(cacheDir, name), { recursive: true, force: true });
    } catch {
      /* raced with another cleaner */
    }
  }
}

async function busyboxBinary(input: BusyboxInput, workDir: string): Promise<{ path: string; data: Buffer }> {
  let path = '/bin/busybox';
  if (input.from === 'download') {
    const debDir = join(workDir, 'busybox-deb');
    await mkdir(debDir, { recursive: true });
    const [deb] = await downloadPackages(debDir, [{ name: input.package, version: input.version }]);
    const root = join(workDir, 'busybox-root');
    await extractPackage(deb, root);
    path = join(root, 'bin', 'busybox');
  }
  const data = await readFile(path);
  if (!isStaticElf(data)) throw new EmbersError('EMB_GUEST_BUILD_FAILED', `${path} is not a static x86-64 busybox`, { path });
  return { path, data };
}

async function buildInitramfs(
  r: Resolved,
  workDir: string,
  modules: { file: string; data: Buffer }[],
  kernelVersion: string,
  outPath: string,
  progress: (m: string) => void,
): Promise<void> {
  const bb = await busyboxBinary(r.inputs.busybox, workDir);
  const { stdout: applets } = await run(bb.path, ['--list-full']);
  progress('compiling embers-exec (gcc -static)');
  const src = join(workDir, 'embers-exec.c');
  const bin = join(workDir, 'embers-exec');
  await writeFile(src, r.sources.execSource);
  await compileExecHelper(src, bin);
  progress('compiling embers-agent (gcc -static)');
  const agentSrc = join(workDir, 'embers-agent.c');
  const agentBin = join(workDir, 'embers-agent');
  await writeFile(agentSrc, r.sources.agentSource);
  await compileExecHelper(agentSrc, agentBin);
  progress('writing the initramfs');
  const initrd = buildBaseInitramfs({
    busybox: bb.data,
    applets: applets.split('\n'),
    init: r.sources.init,
    execHelper: await readFile(bin),
    agent: await readFile(agentBin),
    modules,
    info: { kind: r.inputs.kind, cacheKey: r.key, kernelVersion, busybox: r.inputs.busybox.version },
  });
  await writeFile(outPath, initrd);
}

async function buildDebian(r: Resolved, tmp: string, workDir: string, progress: (m: string) => void): Promise<{ kernelVersion: string; modules: string[] }> {
  const pkg = r.kernelPackage!;
  await requireTool('dpkg', 'dpkg');
  await requireTool('xz', 'xz-utils');
  await requireTool('modprobe', 'kmod');
  progress(`downloading ${pkg.name} ${pkg.version} (about 70 MB)`);
  const debDir = join(workDir, 'debs');
  await mkdir(debDir, { recursive: true });
  const [, imageDeb] = await downloadPackages(debDir, [
    { name: pkg.meta.name, version: pkg.meta.version },
    { name: pkg.name, version: pkg.version },
  ]);
  progress(`unpacking ${pkg.name} (dpkg -x, nothing installed)`);
  const root = join(workDir, 'root');
  await extractPackage(imageDeb, root);
  let kernelVersion = pkg.kernelVersion;
  const moduleDirs = await readdir(join(root, 'lib', 'modules')).catch(() => [] as string[]);
  if (!moduleDirs.includes(kernelVersion)) {
    if (moduleDirs.length !== 1)
      throw new EmbersError(
        'EMB_GUEST_BUILD_FAILED',
        `cannot tell the kernel version of ${pkg.name}: lib/modules holds ${moduleDirs.join(', ') || 'nothing'}`,
        { moduleDirs },
      );
    kernelVersion = moduleDirs[0];
  }
  const vmlinuz = join(root, 'boot', `vmlinuz-${kernelVersion}`);
  if (!(await exists(vmlinuz))) throw new EmbersError('EMB_GUEST_BUILD_FAILED', `${pkg.name} has no boot/vmlinuz-${kernelVersion}`, { vmlinuz });
  progress('extracting the ELF vmlinux from vmlinuz');
  await extractVmlinux(vmlinuz, join(tmp, KERNEL_FILE));
  await assertVmlinux(join(tmp, KERNEL_FILE));
  progress('resolving kernel modules (depmod, modprobe --show-depends)');
  const refs = await resolveModules(root, kernelVersion, r.inputs.modules);
  // Debian's virtio_mmio cannot read devices from the command line (ACPI off): ours can
  const mmio = await buildCmdlineVirtioMmio({ workDir, kernelVersion, packageVersion: pkg.version, progress });
  const modules: { file: string; data: Buffer }[] = [];
  for (const ref of refs) modules.push({ file: `${ref.name}.ko`, data: ref.name === 'virtio_mmio' ? mmio : await loadModule(ref.path) });
  progress(`modules in load order: ${refs.map((m) => m.name).join(' ')}`);
  await buildInitramfs(r, workDir, modules, kernelVersion, join(tmp, INITRD_FILE), progress);
  return { kernelVersion, modules: refs.map((m) => m.name) };
}

async function buildFirecrackerConfig(
  r: Resolved,
  tmp: string,
  workDir: string,
  progress: (m: string) => void,
): Promise<{ kernelVersion: string; modules: string[] }> {
  const kernelVersion = await cachedFirecrackerKernel(r, dirname(tmp), workDir, join(tmp, KERNEL_FILE), progress);
  await buildInitramfs(r, workDir, [], kernelVersion, join(tmp, INITRD_FILE), progress);
  return { kernelVersion, modules: [] };
}

/** Bump when the way the firecracker-config kernel is built changes (part of its key). */
const KERNEL_FORMAT = 1;

interface KernelManifest {
  format: number;
  key: string;
  release: string;
  inputs: KitInputs['kernel'];
  size: number;
  sha256: string;
  builtAt: string;
}

/**
 * Copies the firecracker-config vmlinux for `r`'s kernel inputs to `outVmlinux`, compiling it
 * first (about 20 minutes) if <cacheDir>/.kernel-firecracker-config-<key>/ does not hold it.
 * Returns the kernel release. Published like a kit: built in a temp dir, then renamed.
 */
async function cachedFirecrackerKernel(r: Resolved, cacheDir: string, workDir: string, outVmlinux: string, progress: (m: string) => void): Promise<string> {
  const key = sha256(JSON.stringify({ format: KERNEL_FORMAT, ...r.inputs.kernel })).slice(0, 16);
  const dir = join(cacheDir, `.kernel-firecracker-config-${key}`);
  const cached = await readCachedKernel(dir, key);
  if (cached) {
    progress(`using the cached firecracker-config kernel ${cached.release} (${dir})`);
    await copyFile(join(dir, KERNEL_FILE), outVmlinux);
    return cached.release;
  }
  const tmp = await makeTempDir(cacheDir, `.tmp-kernel-${key}`);
  try {
    const kernelDir = join(workDir, 'kernel');
    await mkdir(kernelDir, { recursive: true });
    const release = await buildFirecrackerKernel({
      workDir: kernelDir,
      sourceVersion: r.inputs.kernel.version,
      configPath: firecrackerConfigPath(),
      overridesPath: firecrackerOverridesPath(),
      outVmlinux: join(tmp, KERNEL_FILE),
      progress,
    });
    const st = await stat(join(tmp, KERNEL_FILE));
    const manifest: KernelManifest = {
      format: KERNEL_FORMAT,
      key,
      release,
      inputs: r.inputs.kernel,
      size: st.size,
      sha256: await sha256File(join(tmp, KERNEL_FILE)),
      builtAt: new Date().toISOString(),
    };
    await writeFile(join(tmp, 'kernel.json'), `${JSON.stringify(manifest, null, 2)}\n`);
    for (const f of [KERNEL_FILE, 'kernel.json']) await fsyncPath(join(tmp, f));
    await chmod(tmp, 0o755);
    try {
      await rename(tmp, dir);
      await fsyncPath(cacheDir);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
      // another builder published the same kernel first; ours is as good, use it
    }
    await copyFile(join((await readCachedKernel(dir, key)) ? dir : tmp, KERNEL_FILE), outVmlinux);
    return release;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

async function readCachedKernel(dir: string, key: string): Promise<KernelManifest | undefined> {
  try {
    const m = JSON.parse(await readFile(join(dir, 'kernel.json'), 'utf8')) as KernelManifest;
    if (m.format !== KERNEL_FORMAT || m.key !== key) return undefined;
    if ((await stat(join(dir, KERNEL_FILE))).size !== m.size) return undefined;
    return m;
  } catch {
    return undefined;
  }
}

function wrap(err: unknown): EmbersError {
  if (isEmbersError(err) && err.code !== 'EMB_HOST_COMMAND_FAILED' && err.code !== 'EMB_INTERNAL') return err;
  const text = err instanceof Error ? err.message : String(err);
  const details = isEmbersError(err, 'EMB_HOST_COMMAND_FAILED') ? err.details : {};
  return new EmbersError('EMB_GUEST_BUILD_FAILED', `building the guest kit failed: ${text}`, details, { cause: err });
}

/**
 * Returns the guest kit of `kind` (default 'debian'), building it into `cacheDir` first if no
 * kit with the current inputs is cached. `onProgress` receives one-line messages while building.
 */
export async function ensureGuestKit(opts: { cacheDir: string; kind?: GuestKitKind; onProgress?: (msg: string) => void }): Promise<GuestKit> {
  // one build at a time per cache dir and kind within this process; others wait for it
  const flightKey = `${resolve(opts.cacheDir)}\0${opts.kind ?? 'debian'}`;
  const running = inFlight.get(flightKey);
  if (running) return running;
  const p = ensureGuestKitNow(opts).finally(() => inFlight.delete(flightKey));
  inFlight.set(flightKey, p);
  return p;
}

const inFlight = new Map<string, Promise<GuestKit>>();

async function ensureGuestKitNow(opts: { cacheDir: string; kind?: GuestKitKind; onProgress?: (msg: string) => void }): Promise<GuestKit> {
  const kind = opts.kind ?? 'debian';
  const cacheDir = resolve(opts.cacheDir);
  const progress = (msg: string): void => opts.onProgress?.(msg);
  let r: Resolved;
  try {
    r = await resolveInputs(kind, cacheDir);
  } catch (err) {
    // apt cannot tell the current inputs (no package lists, e.g. after `apt-get clean`):
    // a kit built earlier still boots, so use the newest one rather than fail
    const newest = await newestKit(cacheDir, kind);
    if (newest) {
      progress(`cannot resolve the guest kit inputs (${err instanceof Error ? err.message : String(err)}); using the cached kit ${newest.cacheKey}`);
      return newest;
    }
    throw wrap(err);
  }
  const dir = join(cacheDir, `${kind}-${r.key}`);
  const cached = await readGuestKit(dir, { kind, cacheKey: r.key });
  if (cached) return cached;

  const started = Date.now();
  progress(`building the ${kind} guest kit ${r.key} (${r.inputs.kernel.package} ${r.inputs.kernel.version}) in ${cacheDir}`);
  await mkdir(cacheDir, { recursive: true });
  await removeStale(cacheDir);
  const tmp = await makeTempDir(cacheDir, `.tmp-${kind}-${r.key}`);
  const work = await makeTempDir(cacheDir, `.work-${kind}-${r.key}`);
  try {
    const built = kind === 'debian' ? await buildDebian(r, tmp, work, progress) : await buildFirecrackerConfig(r, tmp, work, progress);
    const kernelPath = join(tmp, KERNEL_FILE);
    const initrdPath = join(tmp, INITRD_FILE);
    const [ks, is] = await Promise.all([stat(kernelPath), stat(initrdPath)]);
    const manifest: KitManifest = {
      format: KIT_FORMAT,
      kind,
      cacheKey: r.key,
      kernelVersion: built.kernelVersion,
      kernel: KERNEL_FILE,
      initrd: INITRD_FILE,
      inputs: r.inputs,
      modules: built.modules,
      sizes: { kernel: ks.size, initrd: is.size },
      sha256: { kernel: await sha256File(kernelPath), initrd: await sha256File(initrdPath) },
      builtAt: new Date().toISOString(),
      buildSeconds: Math.round((Date.now() - started) / 100) / 10,
    };
    await writeFile(join(tmp, MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`);
    for (const f of [KERNEL_FILE, INITRD_FILE, MANIFEST]) await fsyncPath(join(tmp, f));
    await chmod(tmp, 0o755);
    await fsyncPath(tmp);
    try {
      await rename(tmp, dir);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
      // another builder published the same kit first
      const theirs = await readGuestKit(dir, { kind, cacheKey: r.key });
      if (!theirs) throw new EmbersError('EMB_GUEST_BUILD_FAILED', `${dir} exists but holds no valid kit: remove it and build again`, { dir });
      await rm(tmp, { recursive: true, force: true });
      return theirs;
    }
    await fsyncPath(cacheDir);
    progress(`guest kit ready in ${manifest.buildSeconds} s: ${dir} (kernel ${built.kernelVersion}, initramfs ${(is.size / 1e6).toFixed(1)} MB)`);
    const kit = await readGuestKit(dir, { kind, cacheKey: r.key });
    if (!kit) throw new EmbersError('EMB_INTERNAL', `the guest kit just published in ${dir} does not read back`, { dir });
    return kit;
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw wrap(err);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

async function newestKit(cacheDir: string, kind: GuestKitKind): Promise<GuestKit | undefined> {
  let best: { kit: GuestKit; builtAt: string } | undefined;
  for (const kit of await listGuestKits(cacheDir)) {
    if (kit.kind !== kind) continue;
    try {
      const { builtAt } = JSON.parse(await readFile(join(dirname(kit.kernelPath), MANIFEST), 'utf8')) as KitManifest;
      if (!best || builtAt > best.builtAt) best = { kit, builtAt };
    } catch {
      /* vanished meanwhile */
    }
  }
  return best?.kit;
}

/** The published kits under `cacheDir` (for `embers guest ls`). */
export async function listGuestKits(cacheDir: string): Promise<GuestKit[]> {
  const names = await readdir(cacheDir).catch(() => [] as string[]);
  const kits: GuestKit[] = [];
  for (const name of names.sort()) {
    if (name.startsWith('.')) continue;
    const kit = await readGuestKit(join(cacheDir, name));
    if (kit) kits.push(kit);
  }
  return kits;
}
