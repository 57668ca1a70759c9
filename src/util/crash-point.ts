/**
 * Named fault points: a documented test hook (README, "Crash points"), not a mock. The code
 * calls `await crashPoint('snapshot.create.after-pause')` at a step; nothing happens unless the
 * environment names that point:
 *
 * - `EMBERS_CRASH_AT=<name>[@<n>]`: the process SIGKILLs itself at the point (on its n-th
 *   passage, default the first), as `kill -9` or a power cut would stop it there. The crash
 *   matrix tests (test/integration/crash-*.test.ts, test/e2e/crash-*.test.ts) kill at every
 *   point and check that nothing half-made is visible and the next command reconciles.
 * - `EMBERS_PAUSE_AT=<name>[@<n>]` with `EMBERS_PAUSE_FILE=<path>`: the process stops at the
 *   point, writes its pid to `<path>.reached`, and goes on once `<path>` exists. A test runs a
 *   second command exactly while the first is inside the step (the concurrency tests).
 *
 * Every point is listed in CRASH_POINTS with what has happened when it is reached; a unit test
 * checks that each one is reached from src/.
 */
import { access, writeFile } from 'node:fs/promises';
import { environment } from '../config.js';
import { sleep } from './sleep.js';

export const CRASH_POINTS = {
  'snapshot.create.after-pause': 'the VM is paused; nothing is written',
  'snapshot.create.after-vmm-snapshot': 'the VMM wrote its state and memory into the staging dir',
  'snapshot.create.after-disk-copy': 'the disk is frozen into a copy under <home>/tmp; the VM is still paused',
  'snapshot.create.after-resume': 'the VM runs again (or is stopped); the delta is not written yet',
  'snapshot.create.after-delta': 'the disk delta is in the staging dir; no manifest yet',
  'snapshot.publish.before-rename': 'the manifest is written in the staging dir, which is not yet renamed into place',
  'snapshot.create.after-publish': 'the snapshot is published; nothing is uploaded yet (remote mode)',
  'snapshot.push.after-part': 'a part (or a whole small file) is uploaded and recorded in the push state',
  'snapshot.push.before-manifest': 'every file is uploaded; the manifest, which makes the snapshot visible, is not',
  'snapshot.push.after-manifest': 'the manifest is uploaded; the local push state is not cleared yet',
  'snapshot.pull.after-manifest': 'the manifest is read and the pull journal opened; no range is fetched',
  'snapshot.pull.after-range': 'a range is fetched, synced and recorded in the journal',
  'snapshot.pull.before-publish': 'every file is verified and moved into a staging dir, not yet published',
  'snapshot.pull.after-publish': 'the snapshot is published; the transfer dir is not removed yet',
  'snapshot.restore.after-fetch': 'the snapshot is local and checked; no disk is materialised',
  'snapshot.restore.disk.before-rename': 'the restored disk (rootfs + delta) is written and verified under a temp name',
  'snapshot.restore.after-disk': 'the restored disk is in place; no clone is started',
  'instance.launch.after-vmm-start': 'the VMM of a new instance runs in its slot; it is not recorded as complete',
  'image.pull.after-layer': 'a layer blob is downloaded and stored; the manifest is not',
  'image.pull.before-manifest': 'every blob is stored; the manifest, which makes the image pullable offline, is not',
  'image.flatten.after-stage': 'the layers are applied into a staging tree under <home>/tmp',
  'image.flatten.before-publish': 'the rootfs and image.json are written in a partial dir, not yet renamed into place',
  'image.flatten.after-publish': 'the rootfs is published; the tag is not recorded yet',
  'lifecycle.cold-start.after-boot': 'the daemon booted a function instance; it has not served its first request',
  'lifecycle.snapshot.before-create': 'the daemon is about to snapshot an instance after its first invocation',
  'lifecycle.snapshot.after-create':
    'the snapshot after the first invocation is published; the daemon has not recorded it',
} as const;

export type CrashPointName = keyof typeof CRASH_POINTS;

const passages = new Map<string, number>();

/** Parses `<name>[@<n>]`; undefined when `spec` names no point. */
function target(spec: string | undefined): { name: string; nth: number } | undefined {
  if (!spec) return undefined;
  const m = /^([a-z0-9.-]+)(?:@(\d+))?$/.exec(spec.trim());
  if (!m) return undefined;
  return { name: m[1]!, nth: m[2] ? Number(m[2]) : 1 };
}

/**
 * A named fault point (see the file comment). A no-op unless EMBERS_CRASH_AT or
 * EMBERS_PAUSE_AT names `name`.
 */
export async function crashPoint(name: CrashPointName): Promise<void> {
  const faults = environment().faults;
  const crash = target(faults.crashAt);
  const pause = target(faults.pauseAt);
  if (crash?.name !== name && pause?.name !== name) return;
  const n = (passages.get(name) ?? 0) + 1;
  passages.set(name, n);
  if (crash?.name === name && crash.nth === n) {
    process.kill(process.pid, 'SIGKILL');
    await new Promise(() => {}); // the signal is delivered before anything else runs
  }
  if (pause?.name === name && pause.nth === n) {
    const file = faults.pauseFile;
    if (!file) return;
    await writeFile(`${file}.reached`, `${process.pid}\n`);
    for (;;) {
      if (
        await access(file).then(
          () => true,
          () => false,
        )
      )
        return;
      await sleep(50);
    }
  }
}
