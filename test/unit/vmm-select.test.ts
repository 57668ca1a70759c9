import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod } from 'node:fs/promises';
import { isEmbersError } from '../../src/errors.js';
import { detectAccelerator } from '../../src/vmm/accel.js';
import { selectDriver } from '../../src/vmm/select.js';
import { repoPath } from '../helpers/repo.js';

/** An executable that answers like Firecracker: enough for "the binary exists". */
const FAKE = repoPath('test/fixtures/fake-firecracker.mjs');

test('selectDriver: qemu when asked', async () => {
  const { driver, reason } = await selectDriver({ vmm: 'qemu' });
  assert.equal(driver.kind, 'qemu');
  assert.match(reason, /QEMU requested/);
});

test('selectDriver: auto picks firecracker only with its binary AND hardware-backed KVM', async () => {
  await chmod(FAKE, 0o755);
  const hardware = (await detectAccelerator('auto')).accelerator === 'kvm';
  const withBin = await selectDriver({ firecrackerBin: FAKE });
  if (hardware) {
    assert.equal(withBin.driver.kind, 'firecracker');
    assert.match(withBin.reason, /Firecracker at/);
  } else {
    assert.equal(withBin.driver.kind, 'qemu');
    assert.match(withBin.reason, /no hardware-backed KVM/);
    assert.doesNotMatch(withBin.reason, /no executable Firecracker binary/);
  }
  const noBin = await selectDriver({ firecrackerBin: '/nonexistent/firecracker' });
  assert.equal(noBin.driver.kind, 'qemu');
  assert.match(
    noBin.reason,
    /no executable Firecracker binary \(\/nonexistent\/firecracker, from the --firecracker-bin option\)/,
  );
  const tcg = await selectDriver({ firecrackerBin: FAKE, accel: 'tcg' });
  assert.equal(tcg.driver.kind, 'qemu');
  assert.match(tcg.reason, /TCG was requested/);
});

test('selectDriver: EMBERS_FIRECRACKER_BIN is used when no binary is passed', async () => {
  const saved = process.env.EMBERS_FIRECRACKER_BIN;
  process.env.EMBERS_FIRECRACKER_BIN = '/nonexistent/from-env/firecracker';
  try {
    const { reason } = await selectDriver({});
    assert.match(reason, /from-env\/firecracker, from EMBERS_FIRECRACKER_BIN/);
  } finally {
    if (saved === undefined) delete process.env.EMBERS_FIRECRACKER_BIN;
    else process.env.EMBERS_FIRECRACKER_BIN = saved;
  }
});

test('selectDriver: an explicit firecracker request fails clearly, saying what is missing', async () => {
  const hardware = (await detectAccelerator('auto')).accelerator === 'kvm';
  await assert.rejects(selectDriver({ vmm: 'firecracker', firecrackerBin: '/nonexistent/firecracker' }), (e) => {
    assert.ok(isEmbersError(e, 'EMB_VMM_NOT_FOUND'), String(e));
    assert.match(
      e.message,
      /Firecracker was requested but this host has no executable Firecracker binary \(\/nonexistent\/firecracker/,
    );
    if (!hardware) assert.match(e.message, /and no hardware-backed KVM/);
    return true;
  });
  if (hardware) {
    const { driver } = await selectDriver({ vmm: 'firecracker', firecrackerBin: FAKE });
    assert.equal(driver.kind, 'firecracker');
  } else {
    await assert.rejects(selectDriver({ vmm: 'firecracker', firecrackerBin: FAKE }), (e) => {
      assert.ok(isEmbersError(e, 'EMB_VMM_KVM_UNAVAILABLE'), String(e));
      assert.match(e.message, /no hardware-backed KVM \(.+\)/);
      assert.doesNotMatch(e.message, /no executable Firecracker binary/);
      return true;
    });
  }
  await assert.rejects(selectDriver({ vmm: 'bochs' as never }), (e) => isEmbersError(e, 'EMB_CONFIG_INVALID'));
});
