/**
 * The Firecracker driver against its API contract. The driver starts the fake `firecracker`
 * executable (test/fixtures/fake-firecracker.mjs) through its real supervision path (spawn,
 * wait for the socket racing death, stale socket removal, escalation) and talks to it over a
 * real Unix socket; the fake checks every request against the vendored Swagger spec and
 * answers as the spec says. Each flow then asserts that every request was valid, and what
 * the requests were. The netns wrapper is off (the fake runs directly); every process runs in
 * its private mount namespace, as in production (there is no layout without it).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { access, chmod, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { randomFillSync } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EmbersError, isEmbersError } from '../../src/errors.js';
import { agentHello } from '../../src/guest/agent.js';
import type { VmHandle, VmSnapshotFiles, VmTimings } from '../../src/vmm/driver.js';
import { FirecrackerClient } from '../../src/vmm/firecracker/client.js';
import { FirecrackerDriver, type FirecrackerDriverOptions } from '../../src/vmm/firecracker/driver.js';
import { fixedDrivePath } from '../../src/vmm/firecracker/mount-namespace.js';
import { ensureUffdHandler, type UffdHandlerStats } from '../../src/vmm/firecracker/uffd-handler.js';
import { pageServerPrefetch } from '../../src/node/working-sets.js';
import { LocalSnapshotStore } from '../../src/snapshot/local-store.js';
import { SNAPSHOT_FILES } from '../../src/snapshot/manifest.js';
import { WorkingSetStore } from '../../src/snapshot/working-set-store.js';
import { addWorkingSet, snapshotDirs, TEST_META } from '../helpers/snapshots.js';
import { buildHarness } from '../helpers/uffd-harness.js';
import { readSnapshotFormatVersion } from '../../src/vmm/firecracker/version.js';
import { pidAlive } from '../../src/vmm/process.js';
import {
  ensureFakeExecutable,
  find,
  makeSpec,
  operations,
  recorded,
  setKnobs,
  waitForFile,
  type RecordedRequest,
} from '../helpers/fake-firecracker.js';
import { loadSpec, SpecValidator } from '../helpers/swagger-validator.js';
import { repoPath } from '../helpers/repo.js';

let root: string;
let fake: string;
const started: number[] = [];

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'embers-fc-contract-'));
  fake = await ensureFakeExecutable();
});

after(async () => {
  for (const pid of started) if (await pidAlive(pid)) process.kill(pid, 'SIGKILL');
  await rm(root, { recursive: true, force: true });
});

function driver(opts: FirecrackerDriverOptions = {}): FirecrackerDriver {
  return new FirecrackerDriver({
    binary: fake,
    netns: false,
    mountNamespace: { fixedDir: join(root, 'fc') },
    ctrlAltDelGraceMs: 2000,
    sigtermGraceMs: 1000,
    clockRealtime: false, // the load bodies below are exact; the clock_realtime test turns it on
    ...opts,
  });
}

function track<T extends { vm: VmHandle }>(r: T): T {
  started.push(r.vm.pid);
  return r;
}

/** Every request the fake received conformed to the spec and was accepted. */
function assertAllValid(reqs: RecordedRequest[]): void {
  const bad = reqs.filter((r) => r.method && (r.ok !== true || (r.status !== 200 && r.status !== 204)));
  assert.deepEqual(bad, [], 'every request conforms to the spec and is accepted');
}

const BOOT_SEQUENCE = [
  'PUT /logger',
  'PUT /metrics',
  'PUT /machine-config',
  'PUT /boot-source',
  'PUT /drives/{drive_id}',
  'PUT /network-interfaces/{iface_id}',
  'PUT /vsock',
  'PUT /actions',
];

/** The driver's phases were measured (both took time) and lie within the call that contains them. */
function assertTimingsWithin(timings: VmTimings, callMs: number): void {
  assert.ok(timings.spawnMs > 0, `spawn was measured (${timings.spawnMs} ms)`);
  assert.ok(timings.loadMs > 0, `the API calls were measured (${timings.loadMs} ms)`);
  assert.ok(
    timings.spawnMs + timings.loadMs <= callMs + 1,
    `spawn ${timings.spawnMs} + load ${timings.loadMs} ms within the ${callMs} ms call`,
  );
}

test('boot configures every device kind with spec-valid requests; pause, Full and Diff snapshots, resume, shutdown via SendCtrlAltDel', async () => {
  const d = driver({ vsockCid: 3, diffSnapshots: true });
  const spec = await makeSpec(root, 'boot');
  // Stale sockets from a crashed run: Firecracker refuses to start on an existing path.
  await writeFile(join(spec.dir, 'api.sock'), 'stale');
  await writeFile(join(spec.dir, 'vsock.sock'), 'stale');

  const bootStarted = performance.now();
  const { vm, timings } = track(await d.boot(spec));
  const bootMs = performance.now() - bootStarted;
  assert.ok(vm.pid > 0 && (await pidAlive(vm.pid)));
  assertTimingsWithin(timings, bootMs);
  assert.equal(vm.kind, 'firecracker');
  assert.equal(await d.status(vm), 'running');
  assert.match(await readFile(vm.consoleLog, 'utf8'), /fake guest: booting/);

  let reqs = await recorded(spec.dir);
  assertAllValid(reqs);
  assert.deepEqual(
    operations(reqs).filter((o) => o !== 'GET /'),
    BOOT_SEQUENCE,
  );
  assert.deepEqual(find(reqs, 'PUT /machine-config')[0].body, {
    vcpu_count: 2,
    mem_size_mib: 64,
    smt: false,
    track_dirty_pages: true,
  });
  assert.deepEqual(find(reqs, 'PUT /boot-source')[0].body, {
    kernel_image_path: spec.kernelPath,
    initrd_path: spec.initrdPath,
    boot_args: spec.cmdline,
  });
  assert.equal(find(reqs, 'PUT /drives/{drive_id}')[0].url, '/drives/vda');
  assert.deepEqual(find(reqs, 'PUT /drives/{drive_id}')[0].body, {
    drive_id: 'vda',
    path_on_host: fixedDrivePath(join(root, 'fc')),
    is_root_device: false,
    is_read_only: false,
    cache_type: 'Writeback',
  });
  assert.deepEqual(find(reqs, 'PUT /network-interfaces/{iface_id}')[0].body, {
    iface_id: 'eth0',
    host_dev_name: 'tap0',
    guest_mac: 'AA:FC:00:00:00:01',
  });
  assert.deepEqual(find(reqs, 'PUT /vsock')[0].body, { guest_cid: 3, uds_path: join(spec.dir, 'vsock.sock') });
  assert.deepEqual(find(reqs, 'PUT /logger')[0].body, {
    log_path: join(spec.dir, 'firecracker.log'),
    level: 'Info',
    show_level: true,
    show_log_origin: false,
  });
  assert.deepEqual(find(reqs, 'PUT /metrics')[0].body, { metrics_path: join(spec.dir, 'metrics.json') });
  assert.deepEqual(find(reqs, 'PUT /actions')[0].body, { action_type: 'InstanceStart' });

  // A snapshot of a running VM is refused before Firecracker is asked.
  await assert.rejects(
    d.snapshot(vm, join(root, 'never')),
    (e) => isEmbersError(e, 'EMB_VMM_COMMAND_FAILED') && /must be paused/.test((e as Error).message),
  );

  await d.pause(vm);
  assert.equal(await d.status(vm), 'paused');
  const [full, diff] = await snapshotDirs(root, 'snap-full', 'snap-diff');
  const files = await d.snapshot(vm, full);
  assert.deepEqual(files, snapshotFilesIn(full, { vsock: true, agent: true }));
  assert.equal(await readSnapshotFormatVersion(files.stateFile), '10.0.0');
  assert.equal((await stat(files.memoryFile)).size, 64 * 1024 * 1024);
  await d.snapshot(vm, diff, { type: 'Diff' });
  await d.resume(vm);
  assert.equal(await d.status(vm), 'running');

  const steps = await d.stopWithSteps(vm);
  assert.deepEqual(steps, ['SendCtrlAltDel']);
  assert.equal(await pidAlive(vm.pid), false);
  await assert.rejects(access(vm.controlSocket), 'the API socket is removed');
  assert.equal(await d.status(vm), 'stopped');

  reqs = await recorded(spec.dir);
  assertAllValid(reqs);
  assert.deepEqual(
    find(reqs, 'PATCH /vm').map((r) => r.body),
    [{ state: 'Paused' }, { state: 'Resumed' }],
  );
  assert.deepEqual(
    find(reqs, 'PUT /snapshot/create').map((r) => r.body),
    [
      { snapshot_type: 'Full', snapshot_path: join(full, 'vmstate.bin'), mem_file_path: join(full, 'memory.bin') },
      { snapshot_type: 'Diff', snapshot_path: join(diff, 'vmstate.bin'), mem_file_path: join(diff, 'memory.bin') },
    ],
  );
  assert.deepEqual(find(reqs, 'PUT /actions').at(-1)!.body, { action_type: 'SendCtrlAltDel' });
});

/** What the driver says a snapshot into `dir` holds, on the mount-namespace drive layout. */
function snapshotFilesIn(dir: string, channels: { vsock: boolean; agent: boolean }): VmSnapshotFiles {
  return {
    stateFile: join(dir, 'vmstate.bin'),
    memoryFile: join(dir, 'memory.bin'),
    driveLayout: 'mount-namespace',
    ...channels,
  };
}

/** A booted VM's Full snapshot (its VM stopped), for the restore tests. */
async function snapshotOf(name: string, opts: FirecrackerDriverOptions = {}): Promise<VmSnapshotFiles> {
  const d = driver(opts);
  const spec = await makeSpec(root, name);
  const { vm } = track(await d.boot(spec));
  await d.pause(vm);
  const [out] = await snapshotDirs(root, `${name}-snapshot`);
  const files = await d.snapshot(vm, out);
  await d.stop(vm);
  return files;
}

test('restore (File backend): a fresh process gets only logger and metrics before the load; network and vsock overrides; resume_vm', async () => {
  const files = await snapshotOf('src-file', { vsockCid: 3, diffSnapshots: true });
  const d = driver({ vsockCid: 3, diffSnapshots: true });
  const spec = await makeSpec(root, 'clone-file', {
    network: { netns: 'embers-test-x', tapName: 'tap-slot7', guestMac: 'AA:FC:00:00:00:01' },
  });
  const restoreStarted = performance.now();
  const { vm, timings } = track(await d.restore(spec, files, { snapshotTapName: 'tap0' }));
  const restoreMs = performance.now() - restoreStarted;
  assertTimingsWithin(timings, restoreMs);
  assert.equal(vm.memoryFile, files.memoryFile);
  assert.equal(await d.status(vm), 'running');

  const reqs = await recorded(spec.dir);
  assertAllValid(reqs);
  assert.deepEqual(
    operations(reqs).filter((o) => o !== 'GET /'),
    ['PUT /logger', 'PUT /metrics', 'PUT /snapshot/load'],
  );
  assert.deepEqual(find(reqs, 'PUT /snapshot/load')[0].body, {
    snapshot_path: files.stateFile,
    mem_backend: { backend_type: 'File', backend_path: files.memoryFile },
    resume_vm: true,
    track_dirty_pages: true,
    network_overrides: [{ iface_id: 'eth0', host_dev_name: 'tap-slot7' }],
    vsock_override: { uds_path: join(spec.dir, 'vsock.sock') },
  });
  // What the restored VM now uses, as Firecracker reports it.
  const config = await new FirecrackerClient(vm.controlSocket).call('GET /vm/config', {});
  assert.equal(config['network-interfaces']?.[0].host_dev_name, 'tap-slot7');
  assert.equal(config.vsock?.uds_path, join(spec.dir, 'vsock.sock'));
  assert.equal(config['machine-config']?.mem_size_mib, 64);
  await d.stop(vm);
});

test('restore: no network override when the slot tap is the snapshot tap; resume_vm false leaves it paused until resume', async () => {
  const files = await snapshotOf('src-same');
  const d = driver();
  const spec = await makeSpec(root, 'clone-same');
  const { vm } = track(await d.restore(spec, files, { snapshotTapName: 'tap0', resume: false }));
  const load = find(await recorded(spec.dir), 'PUT /snapshot/load')[0];
  assert.deepEqual(load.body, {
    snapshot_path: files.stateFile,
    mem_backend: { backend_type: 'File', backend_path: files.memoryFile },
    resume_vm: false,
  });
  assert.equal(await d.status(vm), 'paused');
  await d.resume(vm);
  assert.equal(await d.status(vm), 'running');
  assertAllValid(await recorded(spec.dir));
  await d.stop(vm);
});

test('restore (Uffd backend): the load names the page-fault handler socket, and Firecracker connects to it', async () => {
  const files = await snapshotOf('src-uffd');
  const uffdSocket = join(root, 'uffd.sock');
  const handshake = new Promise<string>((resolve) => {
    const server = createServer((conn) => {
      let text = '';
      conn.on('data', (c) => (text += c.toString()));
      conn.on('end', () => {
        server.close();
        resolve(text);
      });
    });
    server.listen(uffdSocket);
  });
  const d = driver();
  const spec = await makeSpec(root, 'clone-uffd');
  const { vm } = track(await d.restore(spec, files, { memoryBackend: { type: 'Uffd', socketPath: uffdSocket } }));
  const mappings = JSON.parse(await handshake) as { size: number; page_size: number }[];
  assert.equal(mappings[0].size, 64 * 1024 * 1024);
  assert.equal(vm.memoryFile, '', 'memory is served by the handler, not mapped from a file');
  const load = find(await recorded(spec.dir), 'PUT /snapshot/load')[0];
  assert.deepEqual(load.body?.mem_backend, { backend_type: 'Uffd', backend_path: uffdSocket });
  assertAllValid(await recorded(spec.dir));
  await d.stop(vm);
});

test('restore with the page server (working set): the driver starts it, loads with Uffd, holds the resume for it; a handshake without the uffd fails the restore clearly and leaves no process', async () => {
  const files = await snapshotOf('src-pager');
  const ranges = join(root, 'pager-ws.ranges');
  const header = Buffer.alloc(32);
  header.write('EMBWS1\0\0', 0, 'latin1');
  header.writeUInt32LE(4096, 8);
  header.writeUInt32LE(1, 12);
  header.writeUInt32LE(1, 24); // page 0, one page
  await writeFile(ranges, header);
  const d = driver();
  const spec = await makeSpec(root, 'clone-pager');
  const binary = await ensureUffdHandler(join(root, 'cache'));
  // The stand-in connects and sends the region JSON, but cannot pass a file descriptor from Node:
  // the page server refuses that handshake, and the driver must say so instead of resuming.
  await assert.rejects(
    d.restore(spec, files, { pageServer: { binary, workingSet: { rangesPath: ranges } } }),
    (e) => isEmbersError(e, 'EMB_VMM_START_FAILED') && /carried no file descriptor/.test((e as Error).message),
  );
  const load = find(await recorded(spec.dir), 'PUT /snapshot/load')[0];
  assert.deepEqual(load.body?.mem_backend, { backend_type: 'Uffd', backend_path: join(spec.dir, 'uffd.sock') });
  assert.equal(load.body?.resume_vm, false, 'the VM is resumed only once the page server has the working set in');
  assert.deepEqual(find(await recorded(spec.dir), 'PATCH /vm'), [], 'never resumed');
  assert.equal(await pidAlive(load.pid), false, 'the Firecracker process is gone');
  await assert.rejects(access(join(spec.dir, 'uffd.sock')), 'no page-server socket is left');
});

test("a snapshot with a working set restores through the page server in prefetch mode (the node's plan, the driver, a real userfaultfd): Uffd load, the working set in before the resume, every page the guest touches is the memory file's", async (t) => {
  if (process.getuid?.() !== 0)
    return t.skip(`needs root for userfaultfd: this process runs as uid ${process.getuid?.()}`);
  const made = await snapshotOf('src-ws');
  // a snapshot in a store, as a node has it: its memory with data (the stand-in writes zeros) and a working set
  const store = new LocalSnapshotStore(join(root, 'store'));
  const staging = await store.staging();
  const memory = Buffer.alloc(64 * 1024 * 1024);
  randomFillSync(memory, 0, 2 * 1024 * 1024);
  await writeFile(join(staging, SNAPSHOT_FILES.memory), memory);
  await writeFile(join(staging, SNAPSHOT_FILES.state), await readFile(made.stateFile));
  const m = await store.publish(staging, TEST_META);
  const ranges = {
    pageSize: 4096,
    ranges: [
      { firstPage: 300, pageCount: 20 },
      { firstPage: 5, pageCount: 10 },
      { firstPage: 100, pageCount: 1 },
    ],
  };
  await addWorkingSet(store, m.id, ranges);
  const sets = new WorkingSetStore(store);
  const launch = await pageServerPrefetch(sets.dirOf(m.id), (await sets.verify(m.id)).manifest, join(root, 'cache'));
  assert.equal(launch.via, 'page-server');
  if (launch.via !== 'page-server') return;
  assert.match(
    launch.pageServer.workingSet?.pagesSha256 ?? '',
    /^[0-9a-f]{64}$/,
    'the pages file goes with its sha256',
  );
  const files = {
    stateFile: join(store.pathOf(m.id), SNAPSHOT_FILES.state),
    memoryFile: join(store.pathOf(m.id), SNAPSHOT_FILES.memory),
  };

  const spec = await makeSpec(root, 'clone-ws');
  // the stand-in's guest memory: a real userfaultfd sent to the page server, touched in the working set's order once resumed
  await setKnobs(spec.dir, {
    uffdGuest: {
      harness: await buildHarness(root),
      memoryFile: files.memoryFile,
      order: launch.pageServer.workingSet!.rangesPath,
    },
  });
  const d = driver();
  const { vm } = track(await d.restore(spec, files, { pageServer: launch.pageServer }));
  const reqs = await recorded(spec.dir);
  assertAllValid(reqs);
  const load = find(reqs, 'PUT /snapshot/load')[0];
  assert.deepEqual(load.body?.mem_backend, { backend_type: 'Uffd', backend_path: join(spec.dir, 'uffd.sock') });
  assert.equal(load.body?.resume_vm, false);
  assert.deepEqual(
    find(reqs, 'PATCH /vm').at(-1)?.body,
    { state: 'Resumed' },
    'resumed by the driver once the page server was ready',
  );
  assert.equal(vm.memoryFile, '');

  // the guest touched the working set after the resume and found the memory file's bytes
  const exit = await waitForFile(join(spec.dir, 'uffd-guest.exit'));
  assert.equal(exit, '0', await readFile(join(spec.dir, 'uffd-guest.err'), 'utf8'));
  const report = JSON.parse(await readFile(join(spec.dir, 'uffd-guest.out'), 'utf8')) as {
    touched: number;
    checked: number;
  };
  assert.equal(report.touched, 31);
  assert.equal(report.checked, 31);
  // the page server exits with the process it served, writing its counters
  const stats = JSON.parse(await waitForFile(join(spec.dir, 'uffd-stats.json'))) as UffdHandlerStats;
  assert.equal(stats.mode, 'prefetch');
  assert.equal(stats.prefetched, 31, 'the whole working set was copied in');
  assert.equal(stats.faults, 0, 'in before the guest ran: no page of it faulted');
  assert.equal(stats.exit, 'process-exited');
  await d.stop(vm);
});

test('shutdown escalates SendCtrlAltDel → SIGTERM → SIGKILL and never goes back to the API', async () => {
  const d = driver({ ctrlAltDelGraceMs: 300, sigtermGraceMs: 300 });
  const a = await makeSpec(root, 'stubborn-term');
  await setKnobs(a.dir, { ignoreCtrlAltDel: true });
  const vmA = track(await d.boot(a)).vm;
  assert.deepEqual(await d.stopWithSteps(vmA), ['SendCtrlAltDel', 'SIGTERM+SIGKILL']);
  assert.equal(await pidAlive(vmA.pid), false);
  let reqs = await recorded(a.dir);
  const tail = reqs.slice(reqs.findIndex((r) => r.body?.action_type === 'SendCtrlAltDel'));
  assert.deepEqual(
    tail.map((r) => r.signal ?? r.event ?? `${r.method} ${r.template}`),
    ['PUT /actions', 'SIGTERM', 'exit'],
    'after SendCtrlAltDel only signals follow',
  );

  const b = await makeSpec(root, 'stubborn-kill');
  await setKnobs(b.dir, { ignoreCtrlAltDel: true, ignoreSigterm: true });
  const vmB = track(await d.boot(b)).vm;
  assert.deepEqual(await d.stopWithSteps(vmB), ['SendCtrlAltDel', 'SIGTERM+SIGKILL']);
  assert.equal(await pidAlive(vmB.pid), false);
  reqs = await recorded(b.dir);
  assert.deepEqual(
    reqs
      .slice(reqs.findIndex((r) => r.body?.action_type === 'SendCtrlAltDel'))
      .map((r) => r.signal ?? r.event ?? `${r.method} ${r.template}`),
    ['PUT /actions', 'SIGTERM'],
    'SIGTERM was ignored, SIGKILL ended it (no exit record), no API call after the signal',
  );

  // A paused guest cannot act on Ctrl+Alt+Del: straight to signals.
  const c = await makeSpec(root, 'paused-stop');
  const vmC = track(await d.boot(c)).vm;
  await d.pause(vmC);
  assert.deepEqual(await d.stopWithSteps(vmC), ['SIGTERM+SIGKILL']);
  assert.equal(find(await recorded(c.dir), 'PUT /actions').length, 1, 'only InstanceStart');
});

test('the spec validator refuses a missing required field, a wrong enum, an unknown field, a wrong type, a value below its minimum', () => {
  const v = new SpecValidator(loadSpec(repoPath('src/vmm/firecracker/firecracker-api.yaml')));
  const check = (method: string, url: string, body: unknown) => v.validateRequest(method, url, body);
  assert.deepEqual(check('PUT', '/machine-config', { vcpu_count: 2, mem_size_mib: 128 }).ok, true);
  const cases: [string, string, unknown, RegExp][] = [
    ['PUT', '/machine-config', { vcpu_count: 2 }, /body\.mem_size_mib is required/],
    ['PATCH', '/vm', { state: 'Stopped' }, /body\.state: "Stopped" is not one of "Paused", "Resumed"/],
    [
      'PUT',
      '/drives/vda',
      { drive_id: 'vda', is_root_device: false, path_on_host: '/d', is_read_only: false, readonly: true },
      /body\.readonly is not a field/,
    ],
    ['PUT', '/machine-config', { vcpu_count: '2', mem_size_mib: 128 }, /body\.vcpu_count: expected an integer/],
    ['PUT', '/machine-config', { vcpu_count: 0, mem_size_mib: 128 }, /below the minimum 1/],
    ['PUT', '/machine-config', { vcpu_count: 33, mem_size_mib: 128 }, /above the maximum 32/],
    ['PUT', '/vsock', { guest_cid: 2, uds_path: '/v' }, /below the minimum 3/],
    [
      'PUT',
      '/snapshot/load',
      { snapshot_path: '/s', mem_backend: { backend_type: 'Anonymous', backend_path: '/m' } },
      /backend_type: "Anonymous" is not one of/,
    ],
    [
      'PUT',
      '/snapshot/load',
      { snapshot_path: '/s', network_overrides: [{ iface_id: 'eth0' }] },
      /network_overrides\[0\]\.host_dev_name is required/,
    ],
    ['PUT', '/actions', undefined, /needs a body/],
    ['GET', '/', { x: 1 }, /takes no body/],
  ];
  for (const [method, url, body, expected] of cases) {
    const r = check(method, url, body);
    assert.equal(r.ok, false, `${method} ${url} ${JSON.stringify(body)}`);
    assert.match(!r.ok ? r.errors.join('; ') : '', expected);
  }
  const notFound = check('PUT', '/no-such-thing', {});
  assert.ok(!notFound.ok && notFound.status === 404);
  const badMethod = check('DELETE', '/vm', undefined);
  assert.ok(!badMethod.ok && badMethod.status === 405);
});

test('an invalid request on the wire is refused with 400 and surfaces as EMB_VMM_API_FAULT with method, path and fault_message', async () => {
  const d = driver();
  const spec = await makeSpec(root, 'wire');
  const { vm } = track(await d.boot(spec));
  const client = new FirecrackerClient(vm.controlSocket);
  await assert.rejects(client.call('PATCH /vm', { body: { state: 'Sleeping' } as never }), (e) => {
    assert.ok(isEmbersError(e, 'EMB_VMM_API_FAULT'));
    assert.equal(e.details.method, 'PATCH');
    assert.equal(e.details.path, '/vm');
    assert.equal(e.details.statusCode, 400);
    assert.match(String(e.details.faultMessage), /"Sleeping" is not one of/);
    assert.match(e.message, /Firecracker refused PATCH \/vm \(HTTP 400\)/);
    return true;
  });
  await d.stop(vm);
});

test('a 400 during boot fails the boot with the fault_message, method and path; the process is stopped and its socket removed', async () => {
  const d = driver();
  const spec = await makeSpec(root, 'fault');
  await setKnobs(spec.dir, {
    faults: { 'PUT /machine-config': 'Invalid Memory Configuration: cannot allocate 64 MiB' },
  });
  let pid = 0;
  await assert.rejects(d.boot(spec), (e) => {
    assert.ok(e instanceof EmbersError && e.code === 'EMB_VMM_API_FAULT', String(e));
    assert.equal(e.details.method, 'PUT');
    assert.equal(e.details.path, '/machine-config');
    assert.equal(e.details.faultMessage, 'Invalid Memory Configuration: cannot allocate 64 MiB');
    assert.match(String(e.details.tail), /Invalid Memory Configuration/, 'the log tail is attached');
    return true;
  });
  pid = (await recorded(spec.dir))[0].pid;
  started.push(pid);
  assert.equal(await pidAlive(pid), false);
  await assert.rejects(access(join(spec.dir, 'api.sock')));
});

test('a Firecracker that dies at start: the error carries its stderr tail', async () => {
  const d = driver();
  const spec = await makeSpec(root, 'dies');
  await setKnobs(spec.dir, { dieAtStart: 'Failed to open /dev/kvm: No such file or directory (os error 2)' });
  await assert.rejects(d.boot(spec), (e) => {
    assert.ok(isEmbersError(e, 'EMB_VMM_START_FAILED'), String(e));
    assert.match(e.message, /Firecracker for dies exited with code 1 before its API was ready/);
    assert.match(e.message, /Failed to open \/dev\/kvm: No such file or directory/);
    assert.match(String(e.details.tail), /\[stderr .*vmm\.log\]/);
    return true;
  });
});

test('a missing binary is EMB_VMM_NOT_FOUND', async () => {
  const d = new FirecrackerDriver({
    binary: join(root, 'no-firecracker-here'),
    netns: false,
    mountNamespace: { fixedDir: join(root, 'fc') },
  });
  await assert.rejects(d.version(), (e) => isEmbersError(e, 'EMB_VMM_NOT_FOUND'));
  await assert.rejects(d.boot(await makeSpec(root, 'nobin')), (e) => isEmbersError(e, 'EMB_VMM_NOT_FOUND'));
});

test('versions: version() is the binary version; a snapshot whose format major differs is refused before any process starts', async () => {
  const files = await snapshotOf('src-version');
  const d = driver();
  assert.equal(await d.version(), '1.16.1');
  assert.equal(await d.snapshotVersion(), '10.0.0');
  await d.checkSnapshotVersion('10.0.0');
  await assert.rejects(d.checkSnapshotVersion('9.2.0'), (e) => isEmbersError(e, 'EMB_SNAPSHOT_VERSION_MISMATCH'));

  // A newer Firecracker whose snapshot format has another major.
  const wrapper = join(root, 'firecracker-v2');
  await writeFile(wrapper, `#!/bin/sh\nFAKE_FC_VERSION=2.0.0 FAKE_FC_SNAPSHOT_VERSION=11.0.0 exec ${fake} "$@"\n`);
  await chmod(wrapper, 0o755);
  const newer = driver({ binary: wrapper });
  assert.equal(await newer.version(), '2.0.0');
  const spec = await makeSpec(root, 'clone-version');
  await assert.rejects(newer.restore(spec, files), (e) => {
    assert.ok(isEmbersError(e, 'EMB_SNAPSHOT_VERSION_MISMATCH'), String(e));
    assert.match(
      e.message,
      /snapshot format v10\.0\.0 .* has major version 10, but .*firecracker-v2 v2\.0\.0 loads snapshot format v11\.0\.0 \(major 11\): refused before load/,
    );
    return true;
  });
  assert.deepEqual(await recorded(spec.dir), [], 'no Firecracker process was started');
});

test('a failed load is fatal: the process is gone and the error says why', async () => {
  const d = driver();
  const files = await snapshotOf('src-short');
  // A memory file shorter than the VM's memory: Firecracker refuses the load and exits.
  await writeFile(files.memoryFile, Buffer.alloc(4096));
  const spec = await makeSpec(root, 'clone-short');
  await assert.rejects(d.restore(spec, files), (e) => {
    assert.ok(isEmbersError(e, 'EMB_SNAPSHOT_LOAD_FAILED'), String(e));
    assert.ok(
      String(e.details.faultMessage).includes(files.memoryFile),
      `the fault names the memory file: ${String(e.details.faultMessage)}`,
    );
    assert.equal(e.details.path, '/snapshot/load');
    assert.match(e.message, /could not load snapshot/);
    return true;
  });
  const reqs = await recorded(spec.dir);
  assert.equal(await pidAlive(reqs[0].pid), false, 'the process that failed the load is gone');
  assertAllValid(reqs.filter((r) => r.template !== '/snapshot/load'));
});

test("no path back to another VM's disk: no layout without the mount namespace or the jail; snapshots say their drive layout; a restore into the other layout is refused", async () => {
  assert.throws(
    () => new FirecrackerDriver({ binary: fake, mountNamespace: false as unknown as { fixedDir: string } }),
    (e) => isEmbersError(e, 'EMB_CONFIG_INVALID') && /reopens the snapshotted VM's own disk/.test((e as Error).message),
  );
  const d = driver();
  const spec = await makeSpec(root, 'src-layout');
  const { vm } = track(await d.boot(spec));
  assert.equal(vm.driveLayout, 'mount-namespace');
  assert.equal(vm.vsock, false);
  await d.pause(vm);
  const [out] = await snapshotDirs(root, 'src-layout-snapshot');
  const files = await d.snapshot(vm, out);
  assert.deepEqual(files, snapshotFilesIn(out, { vsock: false, agent: false }));
  await d.stop(vm);
  const clone = await makeSpec(root, 'clone-layout');
  await assert.rejects(d.restore(clone, files, { snapshotDriveLayout: 'jail' }), (e) => {
    assert.ok(isEmbersError(e, 'EMB_SNAPSHOT_INCOMPATIBLE'), String(e));
    assert.match((e as Error).message, /taken with the jail drive layout, this driver runs mount-namespace/);
    return true;
  });
  assert.deepEqual(await recorded(clone.dir), [], 'refused before any process started');
});

test('vsock_override only for a snapshot with a vsock device', async () => {
  const files = await snapshotOf('src-novsock');
  const d = driver({ vsockCid: 3 });
  const spec = await makeSpec(root, 'clone-novsock');
  // A node with vsock restores a snapshot taken without: no override (Firecracker would refuse one).
  const { vm } = track(await d.restore(spec, files, { snapshotTapName: 'tap0', snapshotHasVsock: false }));
  assert.equal(vm.vsock, false);
  const load = find(await recorded(spec.dir), 'PUT /snapshot/load')[0];
  assert.equal(load.body?.vsock_override, undefined);
  assert.equal(await d.status(vm), 'running');
  await d.pause(vm);
  const [out] = await snapshotDirs(root, 'clone-novsock-snapshot');
  assert.equal((await d.snapshot(vm, out)).vsock, false, 'a snapshot of that clone has no vsock either');
  await d.stop(vm);
});

test("restore: clock_realtime on load, and the guest agent reached through the clone's own vsock socket (CONNECT 5252)", async () => {
  const files = await snapshotOf('src-agent', { vsockCid: 3 });
  assert.equal(files.agent, true, 'a snapshot with a vsock device has the agent channel');
  const d = driver({ vsockCid: 3, clockRealtime: true });
  const spec = await makeSpec(root, 'clone-agent');
  await setKnobs(spec.dir, { guestAgent: true });
  const { vm } = track(await d.restore(spec, files, { snapshotTapName: 'tap0' }));
  const load = find(await recorded(spec.dir), 'PUT /snapshot/load')[0];
  assert.equal(load.body?.clock_realtime, true);
  assert.deepEqual(load.body?.vsock_override, { uds_path: join(spec.dir, 'vsock.sock') });
  assert.deepEqual(vm.agent, { kind: 'vsock', socket: join(spec.dir, 'vsock.sock') });
  assert.equal(await agentHello(vm.agent!), 'fake-guest-agent');
  const connects = (await recorded(spec.dir)).filter((r) => (r as { vsockConnect?: string }).vsockConnect);
  assert.deepEqual(
    connects.map((r) => [(r as { vsockConnect?: string }).vsockConnect, (r as { socket?: string }).socket]),
    [['CONNECT 5252', join(spec.dir, 'vsock.sock')]],
  );
  assertAllValid(await recorded(spec.dir));
  await d.stop(vm);
});

test('the guest agent over vsock: no listener in the guest is EMB_GUEST_AGENT_UNREACHABLE, not a hang', async () => {
  const d = driver({ vsockCid: 3 });
  const spec = await makeSpec(root, 'boot-no-agent');
  const { vm } = track(await d.boot(spec));
  assert.ok(vm.agent);
  await assert.rejects(
    agentHello(vm.agent!, 3000),
    (e: unknown) => isEmbersError(e, 'EMB_GUEST_AGENT_UNREACHABLE') && /closed/.test(e.message),
  );
  await d.stop(vm);
});

test('every request the driver sent in this file conformed to the spec', async () => {
  let n = 0;
  for (const entry of await readdir(root)) {
    if (entry === 'wire') continue; // that test sent an invalid request on purpose
    const reqs = await recorded(join(root, entry));
    const invalid = reqs.filter((r) => r.method && r.ok === false);
    assert.deepEqual(invalid, [], `${entry}: requests that do not conform to the spec`);
    n += reqs.filter((r) => r.method).length;
  }
  assert.ok(n > 50, `checked ${n} requests`);
});
