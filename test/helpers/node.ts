import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { EmbersNode, type NodeOptions } from '../../src/node/node.js';
import { filesBelow, leakedSince, readHostResources, type HostResources } from './leaks.js';

/**
 * A throwaway embers node for a test: its own home in /tmp (the shared guest-kit cache is
 * reused), and a check at the end that stopping everything left nothing on the host.
 */
export interface TestNode {
  node: EmbersNode;
  home: string;
  /** Stops everything, tears the pool down, asserts no leak, removes the home. */
  close(): Promise<void>;
}

export async function openTestNode(opts: NodeOptions = {}): Promise<TestNode> {
  const before: HostResources = await readHostResources();
  const home = opts.home ?? (await mkdtemp(join(tmpdir(), 'embers-test-')));
  const node = await EmbersNode.open({ home, netPoolSize: 2, ...opts });
  return {
    node,
    home,
    async close() {
      try {
        await node.down();
        assert.deepEqual(await filesBelow(node.config.paths.tmp), [], 'temp files left in the home');
        assert.deepEqual(await filesBelow(node.config.paths.instances), [], 'instance dirs left in the home');
        assert.deepEqual(await leakedSince(before), {}, 'host resources leaked');
      } finally {
        if (opts.home) {
          for (const entry of await readdir(home)) await rm(join(home, entry), { recursive: true, force: true });
        } else await rm(home, { recursive: true, force: true });
      }
    },
  };
}
