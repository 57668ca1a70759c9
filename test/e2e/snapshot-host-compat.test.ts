import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isEmbersError } from '../../src/errors.js';
import { buildTestFunctionImage } from '../../src/examples/test-function.js';
import { EmbersNode } from '../../src/node/node.js';
import { describeHost } from '../../src/snapshot/host-compat.js';
import { parseCpuinfo } from '../../src/vmm/host-cpu.js';
import { leakedSince, readHostResources } from '../helpers/leaks.js';
import { openTestNode } from '../helpers/node.js';

const hostMismatch = (pattern: RegExp) => (err: unknown) => {
  assert.ok(isEmbersError(err, 'EMB_SNAPSHOT_HOST_MISMATCH'), String(err));
  assert.match(err.message, pattern);
  return true;
};

test('host compat: a snapshot records its host; a restore under another CPU model or guest kernel is refused, and the override restores it', async () => {
  const before = await readHostResources();
  const home = await mkdtemp(join(tmpdir(), 'embers-test-'));
  try {
    // node A makes the snapshot with the default CPU model (max under TCG, host under KVM)
    const a = await EmbersNode.open({ home, netPoolSize: 1 });
    let id: string;
    let model: string;
    try {
      const image = await buildTestFunctionImage(join(home, 'fn'));
      await a.run({ image, vcpus: 1, memoryMiB: 128, port: 8080, env: [] }, { name: 'origin' });
      const { manifest: m } = await a.snapshots.create('origin', { stop: true });
      id = m.id;
      const cpu = parseCpuinfo(await readFile('/proc/cpuinfo', 'utf8'));
      assert.ok(m.host, 'the manifest records the host');
      assert.equal(m.host.cpu.vendor, cpu.vendor);
      assert.equal(m.host.cpu.modelName, cpu.modelName);
      assert.deepEqual(m.host.cpu.flags, cpu.flags);
      assert.deepEqual(m.host.guestCpu, await a.driver.guestCpu!());
      model = m.host.guestCpu.model;
      assert.equal(m.vmm.deviceDiscovery, 'acpi');
      assert.equal(m.vmm.driveLayout, 'plain');
      assert.equal(m.vmm.version, await a.driver.version());

      // the guest kernel rule, against this host's real description with another kernel in its kit
      const kit = await a.guestKit();
      const here = await describeHost(a.driver, kit.kernelVersion);
      assert.deepEqual(await a.snapshots.checkHost(m, { here }), [], 'this host as it is passes');
      const otherKernel = { ...here, kernelVersion: '6.1.0-0-other' };
      await assert.rejects(
        a.snapshots.checkHost(m, { here: otherKernel }),
        hostMismatch(
          new RegExp(`guest kernel: ${kit.kernelVersion.replace(/\./g, '\\.')} recorded, 6\\.1\\.0-0-other here`),
        ),
      );
      const warnings = await a.snapshots.checkHost(m, { here: otherKernel, allowHostMismatch: true });
      assert.equal(warnings.length, 1);
      assert.match(warnings[0], /allowed.*guest kernel/);
    } finally {
      await a.down();
    }
    assert.deepEqual(await leakedSince(before), {}, 'node A left nothing behind');

    // node B, same home and host, configured with another CPU model: a real refusal, then the override
    const otherModel = `${model},-hle`; // TSX is not emulated by TCG: the guest sees the same CPU
    const t = await openTestNode({ home, qemuCpuModel: otherModel });
    try {
      await assert.rejects(
        t.node.snapshots.restore(id),
        hostMismatch(new RegExp(`guest CPU model: ${model} recorded, ${otherModel} here`)),
      );
      assert.deepEqual(await t.node.list(), [], 'the refusal started nothing');
      const r = await t.node.snapshots.restore(id, { allowHostMismatch: true });
      assert.equal(r.hostWarnings.length, 1);
      assert.match(r.hostWarnings[0], /although its host differs \(allowed\): guest CPU model/);
      const clone = r.clones[0].record.name;
      assert.equal((await t.node.invoke(clone, { path: '/' })).body.trim(), 'hello from embers');
    } finally {
      await t.close();
    }
  } finally {
    await rm(home, { recursive: true, force: true });
  }
});
