/**
 * virtio_mmio.ko for the Debian kit, built with CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES.
 *
 * Debian's kernel has that option off: its virtio_mmio module finds devices only through ACPI
 * (or a device tree) and has no `device=` parameter. A VMM without ACPI (Firecracker with
 * `acpi=off`, QEMU `-M microvm,acpi=off`) names its devices on the kernel command line
 * (`virtio_mmio.device=SIZE@BASE:IRQ`), which such a guest cannot read. So the kit compiles
 * this one module again, out of tree, from the kernel's own source (linux-source-<series> at
 * the kernel package's exact version) against its own headers (linux-headers-<abi>-amd64,
 * -common, linux-kbuild-<series>): the same vermagic and symbol versions, plus the parameter.
 * The init passes the command line's `virtio_mmio.device=` values to it (busybox insmod does
 * not read /proc/cmdline). About 140 MB of download and 20 s of build; nothing is installed.
 */
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { EmbersError } from '../errors.js';
import { requireTool, run } from '../util/exec.js';
import { downloadPackages, extractPackage } from './apt.js';

/** The C source file of the module inside the kernel tree. */
const SOURCE = 'drivers/virtio/virtio_mmio.c';

/**
 * Builds virtio_mmio.ko with command-line devices for Debian kernel `kernelVersion`
 * ("6.1.0-57-amd64") from packages at `packageVersion` ("6.1.192-3"); returns its bytes
 * (debug info stripped).
 */
export async function buildCmdlineVirtioMmio(opts: {
  workDir: string;
  kernelVersion: string;
  packageVersion: string;
  progress: (msg: string) => void;
}): Promise<Buffer> {
  const m = /^((\d+\.\d+)\.\d+-\d+)-amd64$/.exec(opts.kernelVersion);
  if (!m)
    throw EmbersError.of('EMB_GUEST_BUILD_FAILED', {
      problem: 'headers-unknown',
      kernelVersion: opts.kernelVersion,
      packageVersion: opts.packageVersion,
    });
  const [, abi, series] = m;
  for (const [tool, pkg] of [
    ['make', 'make'],
    ['gcc-12', 'gcc-12'],
    ['strip', 'binutils'],
    ['tar', 'tar'],
    ['xz', 'xz-utils'],
  ])
    await requireTool(tool, pkg);
  const debs = join(opts.workDir, 'mmio-debs');
  const root = join(opts.workDir, 'mmio-root');
  await mkdir(debs, { recursive: true });
  const version = opts.packageVersion;
  const wanted = [
    `linux-headers-${opts.kernelVersion}`,
    `linux-headers-${abi}-common`,
    `linux-kbuild-${series}`,
    `linux-source-${series}`,
  ];
  opts.progress(
    `downloading the headers and source of ${opts.kernelVersion} to build virtio_mmio with command-line devices (about 150 MB)`,
  );
  const files = await downloadPackages(
    debs,
    wanted.map((name) => ({ name, version })),
  );
  for (const deb of files.slice(0, 3)) await extractPackage(deb, root);
  await extractPackage(files[3], join(opts.workDir, 'mmio-source'));

  // the one source file, from the tarball linux-source ships
  const srcParent = join(opts.workDir, 'mmio-source', 'usr', 'src');
  const tarball = (await readdir(srcParent)).find((f) => /^linux-source-.*\.tar\.(xz|gz|bz2)$/.test(f));
  if (!tarball) throw EmbersError.of('EMB_GUEST_BUILD_FAILED', { problem: 'source-tarball-missing', srcParent });
  const top = tarball.replace(/\.tar\.(xz|gz|bz2)$/, '');
  const moduleDir = join(opts.workDir, 'mmio-module');
  await mkdir(moduleDir, { recursive: true });
  opts.progress(`extracting ${SOURCE} from ${tarball}`);
  await run('tar', ['-xf', join(srcParent, tarball), '-C', moduleDir, '--strip-components=3', `${top}/${SOURCE}`], {
    timeoutMs: 10 * 60_000,
  });
  await writeFile(
    join(moduleDir, 'Kbuild'),
    'obj-m := virtio_mmio.o\nccflags-y := -DCONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=1\n',
  );

  // the headers' Makefile includes the -common one by its installed path: point it here
  const headers = join(root, 'usr', 'src', `linux-headers-${opts.kernelVersion}`);
  const makefile = join(headers, 'Makefile');
  const text = await readFile(makefile, 'utf8');
  const fixed = text.replace(/^include \/usr\/src\//m, `include ${root}/usr/src/`);
  if (fixed === text) throw EmbersError.of('EMB_GUEST_BUILD_FAILED', { problem: 'makefile-unexpected', makefile });
  await writeFile(makefile, fixed);

  opts.progress('compiling virtio_mmio.ko');
  await run('make', ['-C', headers, `M=${moduleDir}`, 'modules'], { timeoutMs: 20 * 60_000 });
  const ko = join(moduleDir, 'virtio_mmio.ko');
  await run('strip', ['--strip-debug', ko]);
  const data = await readFile(ko);
  if (!data.includes('vm_cmdline'))
    throw EmbersError.of('EMB_GUEST_BUILD_FAILED', { problem: 'module-without-cmdline', ko });
  return data;
}
