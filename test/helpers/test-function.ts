/**
 * Checks of the test function (src/examples/test-function.ts) in a running instance, as the
 * e2e tests make them: the files it writes to its disk and reads back, and its disk after stop.
 */
import assert from 'node:assert/strict';
import { expectedFileSha256, reportedSha256 } from '../../src/examples/test-function.js';
import type { EmbersNode } from '../../src/node/node.js';
import { run } from '../../src/util/exec.js';

/** A file the test function writes in its data dir: `size` bytes generated from `seed`. */
export interface TestFile {
  name: string;
  size: number;
  seed: string;
}

/** Has `instance` write `file` (fsynced unless `sync` is false) and asserts the sha256 it reports is the file's. */
export async function writeTestFile(node: EmbersNode, instance: string, file: TestFile, sync = true): Promise<void> {
  const path = `/cgi-bin/write?name=${file.name}&size=${file.size}&seed=${file.seed}&sync=${sync ? 1 : 0}`;
  assert.equal(reportedSha256((await node.invoke(instance, { path })).body), expectedFileSha256(file.seed, file.size));
}

/** Asserts that `instance` reads `file` back as written (its sha256). */
export async function assertReadsBack(node: EmbersNode, instance: string, file: TestFile): Promise<void> {
  assert.equal(
    reportedSha256((await node.invoke(instance, { path: `/cgi-bin/read?name=${file.name}` })).body),
    expectedFileSha256(file.seed, file.size),
  );
}

/** Stops `instance`'s VM, checks its disk with e2fsck -fn, then releases the instance. */
export async function stopAndFsck(node: EmbersNode, instance: string): Promise<void> {
  const rec = await node.instances.get(instance);
  await node.driver.stop(rec.vm);
  const fsck = await run('e2fsck', ['-fn', rec.diskPath], { okCodes: [1, 4, 8] });
  assert.equal(fsck.code, 0, `e2fsck -fn on ${instance}'s disk:\n${fsck.stdout}\n${fsck.stderr}`);
  await node.stop(instance);
}
