/**
 * The optional Firecracker jailer: Firecracker runs chrooted in
 * `<chrootBaseDir>/<exec file name>/<id>/root`, as an unprivileged uid/gid, in the slot's
 * netns and in a cgroup v2 of its own. Inside the jail every VM sees the same paths
 * (IN_JAIL), so a snapshot records `/rootfs.ext4` and every clone restored from it opens its
 * own disk there: the jailer is the other answer to firecracker#4014 (see
 * mount-namespace.ts), and the driver uses no mount namespace when the jailer is on.
 *
 * Files are put into the jail as hard links (the clone's disk must be the same inode, so
 * the jail base dir must be on the filesystem of the embers home); read-only inputs that
 * cannot be linked are copied.
 */
import { chown, copyFile, link, mkdir, rename, rm, rmdir, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { EmbersError } from '../../errors.js';

export interface JailerOptions {
  /** The jailer binary. @default 'jailer' */
  binary?: string;
  /** The uid Firecracker runs as inside the jail. */
  uid: number;
  /** The gid Firecracker runs as inside the jail. */
  gid: number;
  /** Where jails are created; on the same filesystem as the embers home. @default '/srv/jailer' */
  chrootBaseDir?: string;
  /** Let the jailer join the VM's netns (`--netns /var/run/netns/<name>`). @default true */
  joinNetns?: boolean;
  /** cgroup v2 settings written by the jailer, e.g. { 'cpu.max': '50000 100000' }. @default {} */
  cgroups?: Record<string, string>;
  /** The parent cgroup of each VM's cgroup. @default the exec file name (jailer's default) */
  parentCgroup?: string;
}

/** What Firecracker sees inside every jail: the same for every VM. */
export const IN_JAIL = {
  apiSocket: '/run/firecracker.socket',
  kernel: '/vmlinux',
  initrd: '/initrd.img',
  rootfs: '/rootfs.ext4',
  log: '/firecracker.log',
  metrics: '/metrics.json',
  vsock: '/vsock.sock',
  uffd: '/uffd.sock',
  snapshotState: '/snapshot/vmstate.bin',
  snapshotMemory: '/snapshot/memory.bin',
} as const;

export interface JailPlan {
  command: string;
  args: string[];
  /** `<base>/<exec name>/<id>`: removed when the VM stops. */
  jailDir: string;
  /** `<jailDir>/root`: the chroot. */
  chrootDir: string;
  /** The cgroup v2 dir the jailer creates for this VM. */
  cgroupDir: string;
  uid: number;
  gid: number;
}

/** The host path of an in-jail path. */
export function hostPathInJail(plan: JailPlan, inJail: string): string {
  return join(plan.chrootDir, inJail);
}

/** The jailer command line for VM `id` (`[A-Za-z0-9-]{1,64}`). */
export function jailerCommand(
  opts: JailerOptions,
  o: { id: string; firecrackerBin: string; netns?: string },
): JailPlan {
  const base = opts.chrootBaseDir ?? '/srv/jailer';
  const exec = basename(o.firecrackerBin);
  const args = [
    '--id',
    o.id,
    '--exec-file',
    o.firecrackerBin,
    '--uid',
    String(opts.uid),
    '--gid',
    String(opts.gid),
    '--chroot-base-dir',
    base,
    '--cgroup-version',
    '2',
  ];
  if (opts.parentCgroup) args.push('--parent-cgroup', opts.parentCgroup);
  for (const [key, value] of Object.entries(opts.cgroups ?? {}).sort(([a], [b]) => a.localeCompare(b)))
    args.push('--cgroup', `${key}=${value}`);
  if (opts.joinNetns !== false && o.netns) args.push('--netns', `/var/run/netns/${o.netns}`);
  args.push('--', '--api-sock', IN_JAIL.apiSocket);
  const jailDir = join(base, exec, o.id);
  return {
    command: opts.binary ?? 'jailer',
    args,
    jailDir,
    chrootDir: join(jailDir, 'root'),
    cgroupDir: join('/sys/fs/cgroup', opts.parentCgroup ?? exec, o.id),
    uid: opts.uid,
    gid: opts.gid,
  };
}

export interface JailEntry {
  /** The file on the host. */
  host: string;
  /** Where Firecracker sees it. */
  inJail: string;
  /** Firecracker writes it: it must be the same inode (a hard link), never a copy. */
  writable: boolean;
}

/** Creates the chroot and links (or, for read-only files, copies) `entries` into it. */
export async function stageIntoJail(plan: JailPlan, entries: JailEntry[]): Promise<void> {
  await mkdir(plan.chrootDir, { recursive: true });
  for (const dir of ['/run', '/snapshot']) {
    await mkdir(hostPathInJail(plan, dir), { recursive: true });
    await chown(hostPathInJail(plan, dir), plan.uid, plan.gid);
  }
  for (const e of entries) {
    const target = hostPathInJail(plan, e.inJail);
    await mkdir(dirname(target), { recursive: true });
    await rm(target, { force: true });
    try {
      await link(e.host, target);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EXDEV' || e.writable) {
        throw EmbersError.of(
          'EMB_CONFIG_INVALID',
          {
            option: 'the jail',
            value: target,
            problem: `cannot take a link to ${e.host}`,
            reason: (err as Error).message,
          },
          {
            cause: err,
            hint:
              code === 'EXDEV' ? 'put the jailer chroot base dir on the same filesystem as the embers home' : undefined,
          },
        );
      }
      await copyFile(e.host, target);
    }
    // A link shares the inode: chown only what Firecracker writes (read-only inputs must be
    // world-readable, as the guest kit and the snapshot store's files are).
    if (e.writable) await chown(target, plan.uid, plan.gid);
  }
}

/** Creates empty files Firecracker must find existing (its logger and metrics files). */
export async function touchInJail(plan: JailPlan, inJailPaths: string[]): Promise<void> {
  for (const p of inJailPaths) {
    const target = hostPathInJail(plan, p);
    await mkdir(dirname(target), { recursive: true });
    await writeFile(target, '', { flag: 'a' });
    await chown(target, plan.uid, plan.gid);
  }
}

/** Moves a file Firecracker wrote inside the jail to `dest` on the host. */
export async function moveOutOfJail(plan: JailPlan, inJail: string, dest: string): Promise<void> {
  const src = hostPathInJail(plan, inJail);
  try {
    await rename(src, dest);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
    await copyFile(src, dest);
    await rm(src, { force: true });
  }
}

/** Removes the jail dir (links only: the VM's disk itself stays) and the VM's cgroup. Returns the paths it could not remove. */
export async function removeJail(plan: JailPlan): Promise<string[]> {
  const leaked: string[] = [];
  await rm(plan.jailDir, { recursive: true, force: true }).catch(() => leaked.push(plan.jailDir));
  await rmdir(plan.cgroupDir).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') leaked.push(plan.cgroupDir);
  });
  return leaked;
}
