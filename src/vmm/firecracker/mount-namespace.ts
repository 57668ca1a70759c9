/**
 * Every clone sees ITS OWN disk at the path its snapshot recorded, without patching
 * Firecracker (firecracker-microvm/firecracker#4014; vHive keeps patched forks for it).
 *
 * The problem: Firecracker v1.16 has no drive override on PUT /snapshot/load. The state file
 * records each drive's `path_on_host`, and a load reopens exactly that path. If a snapshot
 * recorded /var/lib/embers/instances/fn-1/disk.img, every clone restored from it would open
 * fn-1's disk (or fail once fn-1 is gone); clones must each write to a disk of their own.
 *
 * The choice: every Firecracker process embers starts — for a boot and for a restore — runs
 * in a private mount namespace of its own:
 *
 *     unshare --mount --propagation private -- sh -c '
 *         mount -t tmpfs … embers-fc <fixedDir>          # fixedDir: an empty dir, /run/embers/fc
 *         : > <fixedDir>/rootfs.ext4                     # a file to bind onto
 *         mount --bind <this VM's disk> <fixedDir>/rootfs.ext4
 *         exec firecracker …'
 *
 * Firecracker is always given <fixedDir>/rootfs.ext4 as the drive's path, so every snapshot
 * records that fixed path, and inside each restored clone's namespace the fixed path IS that
 * clone's disk. The tmpfs keeps the host's fixedDir untouched and empty (many namespaces
 * share it as a mount point); the namespace, its tmpfs and the bind mount vanish with the
 * process, so nothing is left to clean up after a crash, and the host's mount table never
 * shows them. Every other path (kernel, initrd, sockets, logs, snapshot files) is the
 * host's, since the namespace starts as a copy of the host's mounts (mounts made on the host
 * after a VM started do not propagate into its namespace).
 *
 * The alternative, the jailer's chroot (see jailer.ts), gives the same property — identical
 * in-jail paths for every clone — and is used instead when the jailer is configured.
 */
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';

/** The default fixed directory: an empty dir on the host, a private tmpfs in each VM's namespace. */
export const DEFAULT_FIXED_DIR = '/run/embers/fc';
/** The name of the instance disk inside the fixed directory. */
export const FIXED_DRIVE_NAME = 'rootfs.ext4';

/** The path Firecracker is given (and every snapshot records) for the instance disk. */
export function fixedDrivePath(fixedDir: string): string {
  return join(fixedDir, FIXED_DRIVE_NAME);
}

/** Creates the (empty) mount point on the host; the tmpfs goes on it inside each namespace. */
export async function prepareFixedDir(fixedDir: string): Promise<void> {
  await mkdir(fixedDir, { recursive: true, mode: 0o755 });
}

const SCRIPT = [
  'mount -t tmpfs -o mode=0755,size=64k,nosuid,nodev embers-fc "$1"',
  ': > "$1/' + FIXED_DRIVE_NAME + '"',
  'mount --bind "$2" "$1/' + FIXED_DRIVE_NAME + '"',
  'shift 2',
  'exec "$@"',
].join(' && ');

/**
 * The command line that runs `command args…` in a private mount namespace where
 * `fixedDrivePath(fixedDir)` is `diskPath`. Needs root (CAP_SYS_ADMIN), util-linux's
 * `unshare` and `mount`. The pid stays the same through every exec.
 */
export function wrapInMountNamespace(
  command: string,
  args: readonly string[],
  o: { fixedDir: string; diskPath: string },
): { command: string; args: string[] } {
  return {
    command: 'unshare',
    args: [
      '--mount',
      '--propagation',
      'private',
      '--',
      '/bin/sh',
      '-c',
      SCRIPT,
      'embers-fc-mountns',
      resolve(o.fixedDir),
      resolve(o.diskPath),
      command,
      ...args,
    ],
  };
}
