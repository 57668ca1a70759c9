import assert from 'node:assert/strict';
import { test } from 'node:test';
import { hostSupportsClockRealtime, resolveFirecrackerOptions } from '../../src/vmm/firecracker/options.js';

test('clock_realtime is passed only where KVM_CLOCK_REALTIME exists: x86_64 hosts with Linux 5.16 or later', () => {
  assert.equal(hostSupportsClockRealtime('5.15.0-91-generic', 'x64'), false);
  assert.equal(hostSupportsClockRealtime('5.16.0', 'x64'), true);
  assert.equal(hostSupportsClockRealtime('6.1.0-57-amd64', 'x64'), true);
  assert.equal(hostSupportsClockRealtime('6.18.44-fc-v782', 'x64'), true);
  assert.equal(hostSupportsClockRealtime('4.19.0', 'x64'), false);
  assert.equal(hostSupportsClockRealtime('6.1.0', 'arm64'), false);
  assert.equal(hostSupportsClockRealtime('not-a-release', 'x64'), false);
  assert.equal(resolveFirecrackerOptions({ clockRealtime: false }).clockRealtime, false);
  assert.equal(resolveFirecrackerOptions({ clockRealtime: true }).clockRealtime, true);
  assert.equal(resolveFirecrackerOptions({}).clockRealtime, hostSupportsClockRealtime());
});
