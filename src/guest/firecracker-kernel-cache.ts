/**
 * The firecracker-config kernel's own cache, <cacheDir>/.kernel-firecracker-config-<key>/,
 * keyed by the kernel's inputs only, so that a change to the init or the exec helper
 * rebuilds the initramfs in seconds, not the kernel in 20 minutes.
 */
import { chmod, copyFile, mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fsyncPath, makeTempDir, sha256, sha256File } from '../util/fs.js';
import { buildFirecrackerKernel } from './firecracker-kernel.js';
import { firecrackerConfigPath, firecrackerOverridesPath } from './paths.js';
import { KERNEL_FILE, type KitInputs, type Resolved } from './kit-layout.js';

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
export async function cachedFirecrackerKernel(
  r: Resolved,
  cacheDir: string,
  workDir: string,
  outVmlinux: string,
  progress: (m: string) => void,
): Promise<string> {
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
