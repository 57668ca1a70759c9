/**
 * The Uffd page server (native/uffd-handler.c) against a real userfaultfd: the peer
 * (test/fixtures/uffd-peer.c) plays Firecracker's side of the handshake exactly as the real
 * v1.16.1 does it (the uffd by SCM_RIGHTS plus the region JSON, in one message, connection
 * kept open), so the handler is tested here even where Firecracker itself cannot load a
 * snapshot. The real-Firecracker Uffd load is in firecracker-real.test.ts.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { access, mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveConfig } from '../../src/config.js';
import { run } from '../../src/util/exec.js';
import { ensureUffdHandler, startUffdHandler } from '../../src/vmm/firecracker/uffd-handler.js';
import { pidAlive, spawnDetached } from '../../src/vmm/process.js';
import { repoPath } from '../helpers/repo.js';

const PAGE = 4096;
const PAGES = 2048; // 8 MiB
let root: string;
let handlerBin: string;
let peerBin: string;

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'embers-uffd-'));
  handlerBin = await ensureUffdHandler(resolveConfig().cacheDir);
  peerBin = join(root, 'uffd-peer');
  await run('gcc', ['-O2', '-Wall', '-o', peerBin, repoPath('test/fixtures/uffd-peer.c')]);
});

after(async () => {
  await rm(root, { recursive: true, force: true });
});

/** A sparse memory file: every third page holds data (its index), the rest are holes. */
async function sparseMemoryFile(path: string): Promise<number> {
  const fh = await open(path, 'w');
  let dataPages = 0;
  try {
    await fh.truncate(PAGES * PAGE);
    for (let i = 0; i < PAGES; i += 3) {
      await fh.write(Buffer.alloc(PAGE, (i % 250) + 1), 0, PAGE, i * PAGE);
      dataPages++;
    }
  } finally {
    await fh.close();
  }
  return dataPages;
}

test('uffd-handler: every page faulted in is the memory file (copied from data, zero pages for holes); removed pages read back as zeros; exits when the peer process does', async (t) => {
  if (process.getuid?.() !== 0)
    return t.skip(`needs root for userfaultfd: this process runs as uid ${process.getuid?.()}`);
  const mem = join(root, 'memory.bin');
  const dataPages = await sparseMemoryFile(mem);
  const h = await startUffdHandler({
    binary: handlerBin,
    socketPath: join(root, 'uffd.sock'),
    memoryFile: mem,
    statsPath: join(root, 'stats.json'),
    logPath: join(root, 'handler.log'),
  });
  const removePages = 16;
  const peer = await run(peerBin, [h.socketPath, String(PAGES * PAGE), join(root, 'out.bin'), String(removePages)]);
  assert.equal(
    peer.stdout.trim(),
    `removed-zero ${removePages}`,
    'pages given up (madvise DONTNEED) fault again and are served as zeros',
  );
  assert.ok(
    (await readFile(join(root, 'out.bin'))).equals(await readFile(mem)),
    'the memory the peer read is the memory file, byte for byte',
  );
  const stats = await h.stats();
  assert.deepEqual(stats, {
    faults: PAGES + removePages,
    copied: dataPages,
    zeroed: PAGES - dataPages + removePages,
    removed_ranges: 1,
    already_mapped: 0,
    regions: 1,
    exit: 'process-exited',
    mode: 'lazy',
    prefetched: 0,
    prefetch_ms: 0,
    recorded: 0,
    chunks_verified: 0,
    chunk_waits: 0,
    wanted: 0,
    bad_chunk: -1,
  });
  assert.equal(await pidAlive(h.pid), false);
  await assert.rejects(access(h.socketPath), 'the socket is removed once connected');
});

test('uffd-handler: gives up waiting when the process it serves dies before connecting, and leaves nothing behind', async (t) => {
  if (process.getuid?.() !== 0)
    return t.skip(`needs root for userfaultfd: this process runs as uid ${process.getuid?.()}`);
  const mem = join(root, 'memory2.bin');
  await sparseMemoryFile(mem);
  const sleeper = await spawnDetached('sleep', ['30'], join(root, 'sleep.log'));
  const h = await startUffdHandler({
    binary: handlerBin,
    socketPath: join(root, 'uffd2.sock'),
    memoryFile: mem,
    statsPath: join(root, 'stats2.json'),
    logPath: join(root, 'handler2.log'),
    pid: sleeper.pid,
  });
  process.kill(sleeper.pid, 'SIGKILL');
  const stats = await h.stats();
  assert.equal(stats.exit, 'process-exited');
  assert.equal(stats.faults, 0);
  await assert.rejects(access(h.socketPath), 'its socket is removed');
});

test('uffd-handler: refuses an unknown mode, a mode without its file and a missing memory file, saying so', async (t) => {
  if (process.getuid?.() !== 0)
    return t.skip(`needs root for userfaultfd: this process runs as uid ${process.getuid?.()}`);
  const mode = await run(handlerBin, ['--socket', join(root, 'x.sock'), '--mem-file', '/dev/null', '--mode', 'eager'], {
    okCodes: [64],
  });
  assert.match(mode.stderr, /unknown mode eager \(lazy, record or prefetch\)/);
  const prefetch = await run(
    handlerBin,
    ['--socket', join(root, 'x.sock'), '--mem-file', '/dev/null', '--mode', 'prefetch'],
    { okCodes: [1] },
  );
  assert.match(prefetch.stderr, /mode prefetch needs --ws-ranges FILE/);
  const missing = await run(handlerBin, ['--socket', join(root, 'y.sock'), '--mem-file', join(root, 'nope')], {
    okCodes: [1],
  });
  assert.match(missing.stderr, /nope: No such file or directory/);
});
