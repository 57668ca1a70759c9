/**
 * The 'firecracker-config' kernel: Debian's linux-source-6.1 built with Firecracker's guest
 * config (src/guest/firecracker/…config) plus embers' overrides (embers-overrides.config,
 * appended) after `make olddefconfig`. Virtio, ext4 and vsock are built in (no modules), the
 * result is an ELF vmlinux with a PVH note that boots with QEMU microvm and with Firecracker.
 * About 20 minutes on 2 cores.
 */
import { access, copyFile, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { EmbersError } from '../errors.js';
import { requireTool, run } from '../util/exec.js';
import { downloadPackages, extractPackage } from './apt.js';
import { assertVmlinux } from './vmlinux.js';

export const LINUX_SOURCE_PACKAGE = 'linux-source-6.1';

/** Host programs (and their Debian packages) a kernel build needs. */
const BUILD_TOOLS: [program: string, pkg: string][] = [
  ['make', 'make'],
  ['gcc', 'gcc'],
  ['bc', 'bc'],
  ['bison', 'bison'],
  ['flex', 'flex'],
  ['perl', 'perl'],
  ['tar', 'tar'],
  ['xz', 'xz-utils'],
];
const BUILD_HEADERS: [header: string, pkg: string][] = [
  ['/usr/include/libelf.h', 'libelf-dev'], // objtool
  ['/usr/include/openssl/opensslv.h', 'libssl-dev'], // certs/extract-cert (SYSTEM_TRUSTED_KEYRING)
];

/** The Debian packages the firecracker-config build needs beyond the base set. */
export const KERNEL_BUILD_PACKAGES = [
  'make',
  'gcc',
  'bc',
  'bison',
  'flex',
  'perl',
  'libelf-dev',
  'libssl-dev',
  'xz-utils',
];

export async function checkKernelBuildTools(): Promise<void> {
  for (const [program, pkg] of BUILD_TOOLS) await requireTool(program, pkg);
  for (const [header, pkg] of BUILD_HEADERS) {
    try {
      await access(header);
    } catch {
      throw EmbersError.of(
        'EMB_HOST_TOOL_MISSING',
        { header, debianPackage: pkg },
        { hint: `run \`apt-get install ${KERNEL_BUILD_PACKAGES.join(' ')}\`` },
      );
    }
  }
}

/**
 * Builds the kernel in `workDir` and copies the vmlinux to `outVmlinux`. Returns the
 * kernel release (`make kernelrelease`).
 */
export async function buildFirecrackerKernel(opts: {
  workDir: string;
  sourceVersion: string;
  configPath: string;
  /** Kconfig lines appended to the config; each must hold in the final .config. */
  overridesPath: string;
  outVmlinux: string;
  progress: (msg: string) => void;
}): Promise<string> {
  const { workDir, progress } = opts;
  await checkKernelBuildTools();
  progress(`downloading ${LINUX_SOURCE_PACKAGE} ${opts.sourceVersion}`);
  const [deb] = await downloadPackages(workDir, [{ name: LINUX_SOURCE_PACKAGE, version: opts.sourceVersion }]);
  const pkgDir = join(workDir, 'pkg');
  progress('unpacking the kernel source');
  await extractPackage(deb, pkgDir);
  const srcParent = join(pkgDir, 'usr', 'src');
  const tarball = (await readdir(srcParent)).find((f) => /^linux-source-.*\.tar\.(xz|gz|bz2)$/.test(f));
  if (!tarball) throw EmbersError.of('EMB_GUEST_BUILD_FAILED', { problem: 'source-tarball-missing', srcParent });
  const srcRoot = join(workDir, 'src');
  await mkdir(srcRoot, { recursive: true });
  await run('tar', ['-xf', join(srcParent, tarball), '-C', srcRoot], { timeoutMs: 30 * 60_000 });
  const top = (await readdir(srcRoot)).find((f) => f.startsWith('linux-source-'));
  if (!top) throw EmbersError.of('EMB_GUEST_BUILD_FAILED', { problem: 'source-folder-missing', tarball });
  const src = join(srcRoot, top);

  progress('configuring (Firecracker guest config + embers overrides + make olddefconfig)');
  const overrides = await readFile(opts.overridesPath, 'utf8');
  await writeFile(join(src, '.config'), `${await readFile(opts.configPath, 'utf8')}\n${overrides}`);
  const makeArgs = ['-C', src, 'ARCH=x86_64'];
  await run('make', [...makeArgs, 'olddefconfig'], { timeoutMs: 10 * 60_000 });
  const missing = missingOverrides(await readFile(join(src, '.config'), 'utf8'), overrides);
  if (missing.length > 0) {
    throw EmbersError.of('EMB_GUEST_BUILD_FAILED', {
      problem: 'config-overrides-dropped',
      missing,
      overridesPath: opts.overridesPath,
    });
  }

  const jobs = String(availableParallelism());
  const started = Date.now();
  progress(`compiling the kernel with ${jobs} jobs (about 20 minutes on 2 cores)`);
  const ticker = setInterval(
    () => progress(`still compiling the kernel (${Math.round((Date.now() - started) / 60_000)} min)`),
    60_000,
  );
  try {
    await run('make', [...makeArgs, `-j${jobs}`, 'vmlinux'], { timeoutMs: 4 * 3600_000 });
  } finally {
    clearInterval(ticker);
  }
  const { stdout } = await run('make', [...makeArgs, '-s', 'kernelrelease']);
  const release = stdout.trim().split('\n').pop() ?? '';
  await copyFile(join(src, 'vmlinux'), opts.outVmlinux);
  await assertVmlinux(opts.outVmlinux);
  progress(`kernel ${release} built in ${Math.round((Date.now() - started) / 1000)} s`);
  return release;
}

/**
 * The override lines (`CONFIG_X=v` or `# CONFIG_X is not set`) that `config` (a .config after
 * olddefconfig) does not hold.
 */
export function missingOverrides(config: string, overrides: string): string[] {
  const have = new Set(config.split('\n').map((l) => l.trim()));
  const wanted = overrides
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /^CONFIG_\w+=/.test(l) || /^# CONFIG_\w+ is not set$/.test(l));
  return wanted.filter((l) => !have.has(l));
}
