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
 * script, exec helper and guest agent sources (and the header they share), the module list and the kit format. A kit is published by renaming its finished
 * temp dir, so a crash never leaves a half kit visible; two concurrent builders both finish
 * and the second rename loses harmlessly.
 *
 * This file is the cache (find, publish, list); what a kit holds is kit-layout.ts, its inputs
 * kit-inputs.ts, its build kit-build.ts and the firecracker-config kernel's own cache
 * firecracker-kernel-cache.ts.
 */
import { chmod, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { EmbersError, isEmbersError } from '../errors.js';
import { fsyncPath, makeTempDir, sha256File } from '../util/fs.js';
import { isX86_64Elf, readElfHeader } from './vmlinux.js';
import {
  INITRD_FILE,
  KERNEL_FILE,
  KIT_FORMAT,
  MANIFEST,
  type GuestKit,
  type GuestKitKind,
  type KitManifest,
  type Resolved,
} from './kit-layout.js';
import { resolveInputs } from './kit-inputs.js';
import { buildDebian, buildFirecrackerConfig } from './kit-build.js';

export { KIT_FORMAT, type GuestKit, type GuestKitKind } from './kit-layout.js';

const STALE_MS = 6 * 3600_000;

/** Reads and checks a published kit; undefined if `dir` holds no complete kit for `key`. */
export async function readGuestKit(
  dir: string,
  expect?: { kind?: GuestKitKind; cacheKey?: string },
): Promise<GuestKit | undefined> {
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
  return {
    kernelPath,
    initrdPath,
    kernelVersion: manifest.kernelVersion,
    kind: manifest.kind,
    cacheKey: manifest.cacheKey,
  };
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

function wrap(err: unknown): EmbersError {
  if (isEmbersError(err) && err.code !== 'EMB_HOST_COMMAND_FAILED' && err.code !== 'EMB_INTERNAL') return err;
  const text = err instanceof Error ? err.message : String(err);
  // the failed host command's line and stderr, when a host command failed
  const c = isEmbersError(err, 'EMB_HOST_COMMAND_FAILED') ? err.details : undefined;
  const command = c ? { cmd: c.cmd, args: c.args, exit: c.exit, stderr: c.stderr } : {};
  return EmbersError.of('EMB_GUEST_BUILD_FAILED', { problem: 'step-failed', reason: text, ...command }, { cause: err });
}

/**
 * Returns the guest kit of `kind` (default 'debian'), building it into `cacheDir` first if no
 * kit with the current inputs is cached. `onProgress` receives one-line messages while building.
 */
export async function ensureGuestKit(opts: {
  cacheDir: string;
  kind?: GuestKitKind;
  onProgress?: (msg: string) => void;
}): Promise<GuestKit> {
  // one build at a time per cache dir and kind within this process; others wait for it
  const flightKey = `${resolve(opts.cacheDir)}\0${opts.kind ?? 'debian'}`;
  const running = inFlight.get(flightKey);
  if (running) return running;
  const p = ensureGuestKitNow(opts).finally(() => inFlight.delete(flightKey));
  inFlight.set(flightKey, p);
  return p;
}

const inFlight = new Map<string, Promise<GuestKit>>();

async function ensureGuestKitNow(opts: {
  cacheDir: string;
  kind?: GuestKitKind;
  onProgress?: (msg: string) => void;
}): Promise<GuestKit> {
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
      progress(
        `cannot resolve the guest kit inputs (${err instanceof Error ? err.message : String(err)}); using the cached kit ${newest.cacheKey}`,
      );
      return newest;
    }
    throw wrap(err);
  }
  const dir = join(cacheDir, `${kind}-${r.key}`);
  const cached = await readGuestKit(dir, { kind, cacheKey: r.key });
  if (cached) return cached;

  const started = Date.now();
  progress(
    `building the ${kind} guest kit ${r.key} (${r.inputs.kernel.package} ${r.inputs.kernel.version}) in ${cacheDir}`,
  );
  await mkdir(cacheDir, { recursive: true });
  await removeStale(cacheDir);
  const tmp = await makeTempDir(cacheDir, `.tmp-${kind}-${r.key}`);
  const work = await makeTempDir(cacheDir, `.work-${kind}-${r.key}`);
  try {
    const built =
      kind === 'debian'
        ? await buildDebian(r, tmp, work, progress)
        : await buildFirecrackerConfig(r, tmp, work, progress);
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
      if (!theirs) throw EmbersError.of('EMB_GUEST_BUILD_FAILED', { problem: 'kit-invalid', dir });
      await rm(tmp, { recursive: true, force: true });
      return theirs;
    }
    await fsyncPath(cacheDir);
    progress(
      `guest kit ready in ${manifest.buildSeconds} s: ${dir} (kernel ${built.kernelVersion}, initramfs ${(is.size / 1e6).toFixed(1)} MB)`,
    );
    const kit = await readGuestKit(dir, { kind, cacheKey: r.key });
    if (!kit)
      throw EmbersError.of('EMB_INTERNAL', {
        problem: `the guest kit just published in ${dir} does not read back`,
        dir,
      });
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
