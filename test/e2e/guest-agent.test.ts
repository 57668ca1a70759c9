/**
 * The guest agent on real guests (QEMU): restore fix-ups (clock, kernel RNG, restore hook),
 * `exec`, and snapshots made without the agent. Kept to few boots: TCG is slow.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { isEmbersError } from '../../src/errors.js';
import { testFunctionImage } from '../../src/examples/test-function.js';
import { FIXTURE_MTIME, writeOciLayout, type FixtureImage } from '../../src/examples/oci-layout.js';
import type { EmbersNode } from '../../src/node/node.js';
import { connect } from 'node:net';
import { encodeExec, FrameDecoder, MSG, type ExitStatus, type Frame } from '../../src/guest/agent-protocol.js';
import { openTestNode } from '../helpers/node.js';

const HOOK = `#!/bin/sh
# the restore hook: re-seeds the function's "generator" (its token), unless told to fail
if [ -f /data/fail-hook ]; then echo "hook refuses: /data/fail-hook exists" >&2; exit 3; fi
head -c 16 /dev/urandom | sha256sum > /tmp/token
`;

const TOKEN_CGI = `#!/bin/sh
printf 'HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nConnection: close\\r\\n\\r\\n'
cat /tmp/token
`;

/** The test function, plus a token drawn from /dev/urandom at start (held in memory, /tmp), a CGI that shows it, and the hook. */
async function hookedImage(dir: string): Promise<string> {
  const base = await testFunctionImage();
  const extra = {
    entries: [
      { path: 'hook', type: 'file' as const, mode: 0o755, content: HOOK, mtime: FIXTURE_MTIME },
      { path: 'www/cgi-bin/token', type: 'file' as const, mode: 0o755, content: TOKEN_CGI, mtime: FIXTURE_MTIME },
    ],
  };
  const image: FixtureImage = {
    ...base,
    layers: [...base.layers, extra],
    config: {
      ...base.config,
      Entrypoint: [
        '/bin/sh',
        '-c',
        'head -c 16 /dev/urandom | sha256sum > /tmp/token && exec /bin/busybox httpd -f -v -p 8080 -h /www',
      ],
      // the hook is declared by the image (a function spec's restoreHook would override it)
      Labels: { 'org.embers.restore-hook': '/hook', 'org.embers.restore-hook-timeout-ms': '20000' },
    },
  };
  await writeOciLayout(dir, image, { refName: 'hooked:latest' });
  return dir;
}

/** An image with no shell: busybox as one file, no applet links, no /bin/sh. */
async function shellLessImage(dir: string): Promise<string> {
  const base = await testFunctionImage();
  const busybox = base.layers[0].entries.find((e) => 'path' in e && e.path === 'bin/busybox')!;
  const image: FixtureImage = {
    layers: [
      {
        entries: [
          { path: 'bin', type: 'dir', mode: 0o755, mtime: FIXTURE_MTIME },
          busybox,
          { path: 'www', type: 'dir', mode: 0o755, mtime: FIXTURE_MTIME },
          { path: 'www/index.html', type: 'file', mode: 0o644, content: 'no shell here\n', mtime: FIXTURE_MTIME },
          { path: 'tmp', type: 'dir', mode: 0o1777, mtime: FIXTURE_MTIME },
        ],
      },
    ],
    config: {
      Entrypoint: ['/bin/busybox', 'httpd', '-f', '-p', '8080', '-h', '/www'],
      Env: ['PATH=/bin'],
      WorkingDir: '/',
      ExposedPorts: ['8080/tcp'],
    },
  };
  await writeOciLayout(dir, image, { refName: 'noshell:latest' });
  return dir;
}

async function exec(
  node: EmbersNode,
  name: string,
  argv: string[],
  opts: { timeoutMs?: number; shell?: boolean; kitRoot?: boolean } = {},
) {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const status: ExitStatus = await node.exec(name, {
    argv,
    timeoutMs: opts.timeoutMs ?? 30_000,
    shell: opts.shell,
    kitRoot: opts.kitRoot,
    onStdout: (b) => out.push(b),
    onStderr: (b) => err.push(b),
  });
  return { ...status, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString() };
}

/** The guest's CLOCK_REALTIME (busybox adjtimex prints it to the µs) minus the host's, in ms, bounded by the call's duration. */
async function clockOffsetMs(node: EmbersNode, name: string): Promise<{ min: number; max: number }> {
  const before = Date.now();
  const r = await exec(node, name, ['adjtimex']);
  const after = Date.now();
  assert.equal(r.state, 'exited', r.stderr);
  const text = r.stdout.toString();
  const sec = Number(/time\.tv_sec:\s*(\d+)/.exec(text)?.[1]);
  const usec = Number(/time\.tv_usec:\s*(\d+)/.exec(text)?.[1]);
  assert.ok(Number.isFinite(sec) && Number.isFinite(usec), `adjtimex output: ${text}`);
  const guest = sec * 1000 + usec / 1000;
  return { min: guest - after, max: guest - before };
}

/**
 * A raw connection to an instance's agent socket (virtio-serial), for what the client never
 * does: `write` the bytes, wait until `until(frames so far)`, then drop the connection.
 */
async function rawRequest(
  node: EmbersNode,
  name: string,
  bytes: Buffer,
  until: (frames: Frame[]) => boolean,
): Promise<Frame[]> {
  const socket = (await node.instances.get(name)).vm.agent!.socket;
  return new Promise((resolve, reject) => {
    const s = connect(socket);
    const decoder = new FrameDecoder();
    const frames: Frame[] = [];
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no such answer in 60 s: ${JSON.stringify(frames.map((f) => f.type))}`));
    }, 60_000);
    s.on('data', (c: Buffer) => {
      frames.push(...decoder.push(c));
      if (!until(frames)) return;
      clearTimeout(timer);
      s.destroy();
      resolve(frames);
    });
    s.on('error', reject);
    s.write(bytes);
  });
}

/** The error, with the guest init and agent lines of every instance's console appended (what failed in the guest). */
async function withConsoles(node: EmbersNode, err: unknown): Promise<unknown> {
  if (!(err instanceof Error)) return err;
  const lines: string[] = [];
  for (const { name, record } of await node.instances.scan()) {
    if (!record) continue;
    const text = await readFile(record.vm.consoleLog, 'utf8').catch(() => '');
    lines.push(`--- ${name}`, ...text.split('\n').filter((l) => /embers-(agent|init)/.test(l)));
  }
  err.message += `\n${lines.join('\n')}`;
  return err;
}

test('guest agent: exec, clock and entropy fix-ups on restore, the restore hook (success and failure), an image without a shell', async () => {
  const progress: string[] = [];
  const t = await openTestNode({ onProgress: (m) => progress.push(m) });
  const { node } = t;
  try {
    const image = await hookedImage(join(t.home, 'hooked'));
    await node.run({ image, vcpus: 1, memoryMiB: 128, port: 8080, env: [] }, { name: 'origin' });
    const tokenBefore = (await node.invoke('origin', { path: '/cgi-bin/token' })).body.trim();
    assert.match(tokenBefore, /^[0-9a-f]{64}/);

    // exec: output, exit codes, no shell unless asked, the kit's busybox for what the image lacks
    let r = await exec(node, 'origin', ['cat', '/tmp/token']);
    assert.deepEqual([r.state, r.code, r.stdout.toString().trim()], ['exited', 0, tokenBefore]);
    r = await exec(node, 'origin', ['sh', '-c', 'echo out; echo err >&2; exit 3']);
    assert.deepEqual([r.state, r.code, r.stdout.toString(), r.stderr], ['exited', 3, 'out\n', 'err\n']);
    r = await exec(node, 'origin', ['echo', 'a;b', '$HOME']);
    assert.equal(r.stdout.toString(), 'a;b $HOME\n', 'no shell: arguments are passed as they are');
    r = await exec(node, 'origin', ['echo $((6 * 7)); exit 5'], { shell: true });
    assert.deepEqual([r.state, r.code, r.stdout.toString()], ['exited', 5, '42\n']);
    r = await exec(node, 'origin', ['uname', '-r']); // not in the image: the kit's busybox applet
    assert.deepEqual([r.state, r.code], ['exited', 0], r.stderr);
    assert.match(r.stdout.toString(), /^6\.\d+/);
    r = await exec(node, 'origin', ['ls', '/newroot/www/cgi-bin'], { kitRoot: true });
    assert.match(r.stdout.toString(), /token/);
    r = await exec(node, 'origin', ['/no/such/program']);
    assert.equal(r.state, 'not-started');
    // a timeout kills the command's whole process group, and nothing of it is left
    r = await exec(node, 'origin', ['sleep 1000 & sleep 1001; echo never'], { shell: true, timeoutMs: 1500 });
    assert.equal(r.state, 'timeout');
    assert.equal(r.stdout.length, 0);
    r = await exec(node, 'origin', ['ps', '-o', 'pid,args'], { kitRoot: true });
    assert.doesNotMatch(r.stdout.toString(), /sleep 100[01]/, `left behind:\n${r.stdout}`);
    // a host that leaves during a command: the command is stopped, and the next request is
    // answered with its own frames only (the HELLO that opens it drops what came before)
    const started = await rawRequest(
      node,
      'origin',
      encodeExec({ argv: ['echo started; exec sleep 1002'], timeoutMs: 0, shell: true }),
      (frames) => frames.some((f) => f.type === MSG.STDOUT),
    );
    assert.equal(started[0].payload.toString(), 'started\n');
    r = await exec(node, 'origin', ['ps', '-o', 'pid,args'], { kitRoot: true });
    assert.doesNotMatch(r.stdout.toString(), /sleep 1002/, `left behind:\n${r.stdout}`);
    assert.deepEqual([r.state, r.code], ['exited', 0]);
    // a bad frame (length 0) is refused, and the agent serves the next connection
    const refused = await rawRequest(node, 'origin', Buffer.alloc(5), (frames) => frames.length > 0);
    assert.deepEqual(
      refused.map((f) => [f.type, f.payload.toString()]),
      [[MSG.ERROR, 'bad frame length']],
    );
    r = await exec(node, 'origin', ['echo', 'still here']);
    assert.equal(r.stdout.toString(), 'still here\n');

    // snapshot S1; then S2 from a disk that makes the hook fail
    const s1 = await node.snapshots.create('origin');
    assert.equal(s1.manifest.vmm.agent, true);
    assert.deepEqual(
      s1.manifest.image.restoreHook,
      { path: '/hook', timeoutMs: 20_000 },
      'the image label is carried into the snapshot',
    );
    await node.invoke('origin', { path: '/cgi-bin/write?name=fail-hook&size=1&seed=x&sync=1' });
    const s2 = await node.snapshots.create('origin', { stop: true });
    const snappedAt = Date.now();

    // meanwhile: an image without a shell still answers exec, through the kit's busybox
    const noShell = await shellLessImage(join(t.home, 'noshell'));
    await node.run({ image: noShell, vcpus: 1, memoryMiB: 128, port: 8080, env: [] }, { name: 'noshell' });
    r = await exec(node, 'noshell', ['sh', '-c', 'exit 7']);
    assert.deepEqual([r.state, r.code], ['exited', 7], 'sh is the kit busybox applet');
    r = await exec(node, 'noshell', ['ls', '/www']);
    assert.deepEqual([r.state, r.code, r.stdout.toString()], ['exited', 0, 'index.html\n']);
    r = await exec(node, 'noshell', ['cat /www/index.html'], { shell: true });
    assert.equal(r.stdout.toString(), 'no shell here\n');
    await node.stop('noshell');

    const waitMs = 31_000 - (Date.now() - snappedAt);
    if (waitMs > 0) await sleep(waitMs);

    // three clones at once: clocks set from the host, RNGs apart, the hook re-seeded each token
    const restored = await node.snapshots.restore(s1.manifest.id, { count: 3 });
    const random: string[] = [];
    const tokens: string[] = [];
    for (const c of restored.clones) {
      const name = c.record.name;
      const fix = c.record.fixup!;
      assert.equal(fix.agent, true);
      assert.ok(
        fix.clockStepMs! > 29_000,
        `clock step ${fix.clockStepMs} ms: the clone's clock was behind by the wait`,
      );
      assert.equal(fix.crngReseeded, true);
      assert.deepEqual(fix.hook, { path: '/hook', state: 'exited', code: 0 });
      assert.ok(c.record.timings.phases.fixupMs > 0, 'the fix-up is a restore phase');
      const off = await clockOffsetMs(node, name);
      assert.ok(
        off.min <= 1000 && off.max >= -1000,
        `clone ${name}'s clock is ${off.min}..${off.max} ms off the host's`,
      );
      const bytes = await exec(node, name, ['head', '-c', '32', '/dev/urandom']);
      assert.equal(bytes.stdout.length, 32);
      random.push(bytes.stdout.toString('hex'));
      tokens.push((await node.invoke(name, { path: '/cgi-bin/token' })).body.trim());
    }
    assert.equal(new Set(random).size, 3, `/dev/urandom in the three clones: ${random.join(' ')}`);
    assert.equal(new Set([tokenBefore, ...tokens]).size, 4, 'each clone got a fresh token from its restore hook');
    // execs to the three clones at once, one after another on each: every one is answered, with its own
    // exit code (a virtio-serial port can see a request before it knows that its host is there)
    const codes = await Promise.all(
      restored.clones.map(async (c) => {
        const got: number[] = [];
        for (let i = 0; i < 8; i++) got.push((await exec(node, c.record.name, [`exit ${i}`], { shell: true })).code);
        return got;
      }),
    );
    assert.deepEqual(
      codes,
      restored.clones.map(() => [0, 1, 2, 3, 4, 5, 6, 7]),
    );
    for (const c of restored.clones) await node.stop(c.record.name);

    // a failing hook fails the restore, and the clone is gone
    await assert.rejects(
      node.snapshots.restore(s2.manifest.id, { count: 1, names: ['hookfail'] }),
      (e: unknown) =>
        isEmbersError(e, 'EMB_RESTORE_HOOK_FAILED') &&
        /exited with status 3/.test(e.message) &&
        /hook refuses/.test(e.message),
    );
    assert.deepEqual(
      (await node.list()).map((i) => i.name),
      [],
    );
    assert.ok(!progress.some((m) => /has no guest agent/.test(m)), 'no warning for snapshots with the agent');
  } catch (err) {
    throw await withConsoles(node, err);
  } finally {
    await t.close();
  }
});

test('guest agent: a snapshot without the agent (as before embers had one) still restores, with a warning', async () => {
  const progress: string[] = [];
  const t = await openTestNode({ guestAgent: false, onProgress: (m) => progress.push(m) });
  const { node } = t;
  try {
    const image = await hookedImage(join(t.home, 'hooked'));
    await node.run({ image, vcpus: 1, memoryMiB: 128, port: 8080, env: [] }, { name: 'old' });
    const snap = await node.snapshots.create('old', { stop: true });
    assert.equal(snap.manifest.vmm.agent, false);
    const restored = await node.snapshots.restore(snap.manifest.id, { count: 1 });
    const clone = restored.clones[0].record;
    assert.deepEqual(clone.fixup, { agent: false });
    assert.match((await node.invoke(clone.name, { path: '/' })).body, /hello from embers/);
    assert.ok(
      progress.some((m) => /warning: snapshot .* has no guest agent/.test(m)),
      `warnings: ${progress.join('\n')}`,
    );
    await assert.rejects(exec(node, clone.name, ['true']), (e: unknown) =>
      isEmbersError(e, 'EMB_GUEST_AGENT_UNREACHABLE'),
    );
    await node.stop(clone.name);
  } finally {
    await t.close();
  }
});
