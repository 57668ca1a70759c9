import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildTestFunctionImage } from '../../src/examples/test-function.js';
import type { GuestKitKind } from '../../src/guest/kit.js';
import type { EmbersNode } from '../../src/node/node.js';
import type { DeviceDiscovery } from '../../src/vmm/driver.js';
import { openTestNode } from '../helpers/node.js';

/** The QEMU machine option of a running VM, from its process's command line. */
async function machineOf(pid: number): Promise<string> {
  const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
  return argv[argv.indexOf('-M') + 1];
}

/** Stops an instance's VM through the driver (a clean stop request first), returns its console, then releases it. */
async function stopAndReadConsole(node: EmbersNode, name: string): Promise<string> {
  const rec = await node.instances.get(name);
  await node.driver.stop(rec.vm);
  const console = await readFile(rec.vm.consoleLog, 'utf8');
  await node.stop(name);
  return console;
}

/**
 * Firecracker describes a guest's devices in ACPI, or (ACPI off) as virtio_mmio.device= words
 * on the kernel command line; QEMU's microvm does the same with acpi=on / acpi=off. Each kit
 * must boot, snapshot and restore either way.
 */
const CASES: { kit: GuestKitKind; discovery: DeviceDiscovery }[] = [
  { kit: 'debian', discovery: 'cmdline' },
  { kit: 'firecracker-config', discovery: 'cmdline' },
  { kit: 'firecracker-config', discovery: 'acpi' },
];

for (const { kit, discovery } of CASES) {
  test(`device discovery ${discovery}, ${kit} kit: boot, snapshot, and a restored clone answers HTTP`, async () => {
    const t = await openTestNode({ guestKernel: kit, deviceDiscovery: discovery });
    const { node } = t;
    try {
      const image = await buildTestFunctionImage(join(t.home, 'fn'));
      const origin = await node.run({ image, vcpus: 1, memoryMiB: 128, port: 8080, env: [] }, { name: 'origin' });
      assert.equal(origin.kit.kind, kit);
      const machine = (await machineOf(origin.vm.pid)).split(',');
      if (discovery === 'cmdline') {
        for (const opt of ['acpi=off', 'rtc=off', 'pcie=off'])
          assert.ok(machine.includes(opt), `${opt} in ${machine.join(',')}`);
      } else assert.ok(machine.includes('acpi=on'), machine.join(','));
      assert.equal((await node.invoke('origin', { path: '/' })).body.trim(), 'hello from embers');

      const { manifest } = await node.snapshots.create('origin');
      assert.equal(manifest.vmm.deviceDiscovery, discovery);
      assert.equal(manifest.guestKit.kind, kit);
      const originConsole = await stopAndReadConsole(node, 'origin');
      if (discovery === 'cmdline') {
        if (kit === 'debian')
          assert.match(
            originConsole,
            /embers-init: loaded \d+ modules \(virtio_mmio: device=\S+@0x[0-9a-f]+:\d+ device=/,
          );
        // no ACPI power button: the stop request came as ctrl-alt-del through the i8042
        assert.match(originConsole, /ctrl-alt-del: stopping the function/);
        assert.match(originConsole, /function exited/);
      }

      const restored = await node.snapshots.restore(manifest.id);
      const clone = restored.clones[0].record;
      assert.equal(clone.vm.deviceDiscovery, discovery);
      assert.deepEqual(
        (await machineOf(clone.vm.pid)).split(','),
        machine,
        'the clone runs the machine the snapshot was made on',
      );
      assert.equal((await node.invoke(clone.name, { path: '/' })).body.trim(), 'hello from embers');
      assert.match(
        (await node.invoke(clone.name, { path: '/cgi-bin/write?name=after.bin&size=4096&seed=c&sync=1' })).body,
        /after\.bin/,
      );
    } finally {
      await t.close();
    }
  });
}
