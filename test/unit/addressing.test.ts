import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_NODES, MAX_SLOTS, slotAddressing } from '../../src/net/addressing.js';

test('slot addressing: unique names and addresses across nodes and slots, names fit IFNAMSIZ', () => {
  const seen = new Set<string>();
  for (const node of [0, 1, MAX_NODES - 1]) {
    for (const index of [0, 1, 63, 64, 255, 256, MAX_SLOTS - 1]) {
      const a = slotAddressing(node, index);
      for (const v of [a.netns, a.hostVeth, a.hostIp, a.nsIp, a.cloneIp]) {
        assert.ok(!seen.has(v), `${v} is used twice`);
        seen.add(v);
      }
      assert.ok(a.hostVeth.length <= 15, a.hostVeth);
      for (const ip of [a.hostIp, a.nsIp, a.cloneIp]) {
        const parts = ip.split('.').map(Number);
        assert.equal(parts.length, 4);
        assert.ok(
          parts.every((p) => p >= 0 && p <= 255),
          ip,
        );
        assert.equal(parts[0], 10);
      }
    }
  }
  assert.throws(() => slotAddressing(MAX_NODES, 0), RangeError);
  assert.throws(() => slotAddressing(0, MAX_SLOTS), RangeError);
});
