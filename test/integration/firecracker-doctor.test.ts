/**
 * What `embers doctor` reports about Firecracker binaries: each one found (path, version,
 * snapshot format) and why it is or is not used. Runs the stand-in and, where it exists, the
 * real binary (their --version answers), so nothing here needs KVM.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { detectAccelerator } from '../../src/vmm/accel.js';
import { probeFirecrackers } from '../../src/vmm/select.js';
import { ensureFakeExecutable } from '../helpers/fake-firecracker.js';
import { findRealFirecracker } from '../helpers/real-firecracker.js';

test('doctor: a configured binary is reported with its version and snapshot format, and why it is (not) used', async () => {
  const fake = await ensureFakeExecutable();
  const hardware = (await detectAccelerator('auto')).accelerator === 'kvm';
  const [first] = await probeFirecrackers({ firecrackerBin: fake });
  assert.equal(first.path, fake);
  assert.equal(first.from, '--firecracker-bin');
  assert.equal(first.found, true);
  assert.equal(first.version, '1.16.1');
  assert.equal(first.snapshotFormat, '10.0.0');
  assert.equal(first.used, false);
  if (!hardware) assert.match(first.reason, /^found, not used: no hardware-backed KVM/);
  const used = await probeFirecrackers({ firecrackerBin: fake, usedBinary: fake });
  assert.equal(used[0].used, true);
  assert.match(used[0].reason, /^used: /);
  const qemu = await probeFirecrackers({ firecrackerBin: fake, vmm: 'qemu' });
  assert.match(qemu[0].reason, /QEMU was requested/);
});

test('doctor: a configured path without a binary says so', async () => {
  const [missing] = await probeFirecrackers({ firecrackerBin: '/nonexistent/firecracker' });
  assert.deepEqual(missing, {
    path: '/nonexistent/firecracker',
    from: '--firecracker-bin',
    found: false,
    used: false,
    reason: 'no executable Firecracker at /nonexistent/firecracker',
  });
});

test('doctor: the real Firecracker (EMBERS_FIRECRACKER_BIN) is found with its real versions', async (t) => {
  const real = await findRealFirecracker();
  if ('skip' in real) return t.skip(real.skip);
  const saved = process.env.EMBERS_FIRECRACKER_BIN;
  process.env.EMBERS_FIRECRACKER_BIN = real.binary;
  try {
    const [probe] = await probeFirecrackers({});
    assert.equal(probe.from, 'EMBERS_FIRECRACKER_BIN');
    assert.equal(probe.found, true);
    assert.match(probe.version ?? '', /^\d+\.\d+\.\d+/);
    assert.match(probe.snapshotFormat ?? '', /^\d+\.\d+\.\d+/);
    if ((await detectAccelerator('auto')).accelerator !== 'kvm') assert.match(probe.reason, /no hardware-backed KVM/);
  } finally {
    if (saved === undefined) delete process.env.EMBERS_FIRECRACKER_BIN;
    else process.env.EMBERS_FIRECRACKER_BIN = saved;
  }
});
