/**
 * Builds the files of a guest kit into a temp dir: the kernel (Debian's, unpacked, or the
 * firecracker-config one, compiled and cached by firecracker-kernel-cache.ts) and the base
 * initramfs (busybox, /init, the exec helper and guest agent compiled static, modules).
 */
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { EmbersError } from '../errors.js';
import { requireTool, run } from '../util/exec.js';
import { exists } from '../util/fs.js';
import { downloadPackages, extractPackage } from './apt.js';
import { buildBaseInitramfs, compileExecHelper, isStaticElf, loadModule, resolveModules } from './initramfs.js';
import { buildCmdlineVirtioMmio } from './virtio-mmio-module.js';
import { assertVmlinux, extractVmlinux } from './vmlinux.js';
import { cachedFirecrackerKernel } from './firecracker-kernel-cache.js';
import { INITRD_FILE, KERNEL_FILE, type BusyboxInput, type Resolved } from './kit-layout.js';

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
  if (!isStaticElf(data)) throw EmbersError.of('EMB_GUEST_BUILD_FAILED', { problem: 'busybox-not-static', path });
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
  for (const h of r.sources.headers) await writeFile(join(workDir, h.name), h.data);
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

export async function buildDebian(
  r: Resolved,
  tmp: string,
  workDir: string,
  progress: (m: string) => void,
): Promise<{ kernelVersion: string; modules: string[] }> {
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
      throw EmbersError.of('EMB_GUEST_BUILD_FAILED', { problem: 'kernel-version-unknown', pkg: pkg.name, moduleDirs });
    kernelVersion = moduleDirs[0];
  }
  const vmlinuz = join(root, 'boot', `vmlinuz-${kernelVersion}`);
  if (!(await exists(vmlinuz)))
    throw EmbersError.of('EMB_GUEST_BUILD_FAILED', {
      problem: 'vmlinuz-missing',
      pkg: pkg.name,
      kernelVersion,
      vmlinuz,
    });
  progress('extracting the ELF vmlinux from vmlinuz');
  await extractVmlinux(vmlinuz, join(tmp, KERNEL_FILE));
  await assertVmlinux(join(tmp, KERNEL_FILE));
  progress('resolving kernel modules (depmod, modprobe --show-depends)');
  const refs = await resolveModules(root, kernelVersion, r.inputs.modules);
  // Debian's virtio_mmio cannot read devices from the command line (ACPI off): ours can
  const mmio = await buildCmdlineVirtioMmio({ workDir, kernelVersion, packageVersion: pkg.version, progress });
  const modules: { file: string; data: Buffer }[] = [];
  for (const ref of refs)
    modules.push({ file: `${ref.name}.ko`, data: ref.name === 'virtio_mmio' ? mmio : await loadModule(ref.path) });
  progress(`modules in load order: ${refs.map((m) => m.name).join(' ')}`);
  await buildInitramfs(r, workDir, modules, kernelVersion, join(tmp, INITRD_FILE), progress);
  return { kernelVersion, modules: refs.map((m) => m.name) };
}

export async function buildFirecrackerConfig(
  r: Resolved,
  tmp: string,
  workDir: string,
  progress: (m: string) => void,
): Promise<{ kernelVersion: string; modules: string[] }> {
  const kernelVersion = await cachedFirecrackerKernel(r, dirname(tmp), workDir, join(tmp, KERNEL_FILE), progress);
  await buildInitramfs(r, workDir, [], kernelVersion, join(tmp, INITRD_FILE), progress);
  return { kernelVersion, modules: [] };
}
