import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GUEST_HZ, hostTscKhz, kernelCmdline, lpjFor, MAX_CMDLINE } from '../../src/guest/kernel-cmdline.js';

const net = { guestIp: '172.16.0.2', prefixLen: 30, gatewayIp: '172.16.0.1' };

function params(line: string): Map<string, string> {
  return new Map(
    line.split(' ').map((p) => {
      const eq = p.indexOf('=');
      return eq < 0 ? [p, ''] : [p.slice(0, eq), p.slice(eq + 1)];
    }),
  );
}

test('kernelCmdline: console, reboot policy, clock and network', () => {
  const line = kernelCmdline(net);
  const p = params(line);
  assert.equal(p.get('console'), 'ttyS0');
  assert.equal(p.get('panic'), '1');
  assert.equal(p.get('reboot'), 'k');
  assert.ok(p.has('quiet'));
  assert.equal(p.get('embers.ip'), '172.16.0.2/30');
  assert.equal(p.get('embers.gw'), '172.16.0.1');
  const khz = Number(p.get('tsc_early_khz'));
  assert.ok(Number.isInteger(khz) && khz > 100_000, `tsc_early_khz=${p.get('tsc_early_khz')}`);
  assert.equal(khz, hostTscKhz());
  assert.equal(Number(p.get('lpj')), lpjFor(khz));
  assert.equal(lpjFor(2_000_000), (2_000_000 * 1000) / GUEST_HZ);
  assert.ok(Buffer.byteLength(line) < MAX_CMDLINE);
  assert.ok(!/\s{2}|^\s|\s$/.test(line));
  // stable: the same line every time (snapshots rely on it)
  assert.equal(kernelCmdline(net), line);
});

test('kernelCmdline: extra parameters are appended; the 2048-byte limit is enforced', () => {
  const line = kernelCmdline(net, ['embers.halt=reboot', 'loglevel=7']);
  assert.ok(line.endsWith(' embers.halt=reboot loglevel=7'));
  assert.throws(() => kernelCmdline(net, ['x'.repeat(2100)]), /limit/);
  assert.throws(() => kernelCmdline(net, ['bad\nparam']), /newline/);
  assert.throws(() => kernelCmdline(net, ['']), /empty/);
});

test('kernelCmdline: bad network configuration is refused', () => {
  assert.throws(() => kernelCmdline({ ...net, guestIp: '172.16.0.256' }), /IPv4/);
  assert.throws(() => kernelCmdline({ ...net, gatewayIp: 'gw' }), /IPv4/);
  assert.throws(() => kernelCmdline({ ...net, prefixLen: 33 }), /prefix/);
  assert.throws(() => kernelCmdline({ ...net, prefixLen: 0 }), /prefix/);
});
