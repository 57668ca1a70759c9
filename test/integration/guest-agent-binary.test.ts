/**
 * The real guest agent binary, compiled as the kit compiles it, run on the host in its test
 * mode (`--listen-unix PATH`: the vsock code path on a Unix socket) and driven by the host's
 * client. EXEC runs with kitRoot (no /newroot here). FIXUP is left to the e2e tests: it would
 * set this host's clock.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { isEmbersError } from '../../src/errors.js';
import { agentExec, agentHello, type AgentChannel } from '../../src/guest/agent.js';
import { encodeExec, encodeFrame, FrameDecoder, MSG } from '../../src/guest/agent-protocol.js';
import { compileExecHelper } from '../../src/guest/initramfs.js';
import { guestInitDir } from '../../src/guest/paths.js';

let dir: string;
let agent: ChildProcess;
let channel: AgentChannel;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'embers-agent-bin-'));
  const bin = join(dir, 'embers-agent');
  await compileExecHelper(join(guestInitDir(), 'embers-agent.c'), bin);
  const socket = join(dir, 'agent.sock');
  agent = spawn(bin, ['--listen-unix', socket], { stdio: ['ignore', 'ignore', 'pipe'] });
  for (let i = 0; i < 100 && !(await readdir(dir)).includes('agent.sock'); i++) await sleep(20);
  channel = { kind: 'virtio-serial', socket };
});

after(async () => {
  agent.kill('SIGKILL');
  await rm(dir, { recursive: true, force: true });
});

async function run(argv: string[], o: { timeoutMs?: number; shell?: boolean } = {}) {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const status = await agentExec(channel, {
    argv,
    timeoutMs: o.timeoutMs ?? 10_000,
    shell: o.shell,
    kitRoot: true,
    onStdout: (b) => out.push(b),
    onStderr: (b) => err.push(b),
  });
  return { ...status, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString() };
}

/** Pids of processes whose command line contains `marker`. */
async function processesWith(marker: string): Promise<number[]> {
  const found: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const cmd = await readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '');
    if (cmd.split('\0').join(' ').includes(marker)) found.push(Number(name));
  }
  return found;
}

test('agent binary: HELLO, then commands with their output, exit codes, signals; no shell unless asked', async () => {
  assert.equal(await agentHello(channel), 'embers-agent 1');
  let r = await run(['echo', 'a;b', '$HOME']);
  assert.deepEqual([r.state, r.code, r.stdout.toString()], ['exited', 0, 'a;b $HOME\n']);
  r = await run(['sh', '-c', 'echo out; echo err >&2; exit 3']);
  assert.deepEqual([r.state, r.code, r.stdout.toString(), r.stderr], ['exited', 3, 'out\n', 'err\n']);
  r = await run(['echo $((6 * 7)); kill -USR1 $$'], { shell: true });
  assert.deepEqual([r.state, r.code, r.stdout.toString()], ['signaled', 10, '42\n']);
  r = await run(['/no/such/program']);
  assert.deepEqual([r.state, r.code], ['not-started', 2]);
  assert.match(r.stderr, /No such file/);
  // a megabyte of output arrives whole, in order
  r = await run(['head -c 1048576 /dev/zero | tr "\\0" x'], { shell: true });
  assert.equal(r.stdout.length, 1048576);
  assert.ok(r.stdout.every((b) => b === 0x78));
});

test('agent binary: a timeout kills the whole process group and leaves nothing; a command that closes its output still runs to its end', async () => {
  const marker = `${process.pid}4242`;
  const started = performance.now();
  let r = await run([`sleep ${marker} & sleep ${marker}1; echo never`], { shell: true, timeoutMs: 800 });
  assert.equal(r.state, 'timeout');
  assert.equal(r.stdout.length, 0);
  assert.ok(performance.now() - started < 8000, 'the timeout ended it, not the sleeps');
  assert.deepEqual(await processesWith(`sleep ${marker}`), [], 'nothing of it is left');
  r = await run(['exec >/dev/null 2>&1; sleep 0.5; exit 4'], { shell: true });
  assert.deepEqual([r.state, r.code], ['exited', 4]);
});

test('agent binary: the host going away kills the command; a bad frame is refused and the agent keeps serving', async () => {
  const marker = `${process.pid}4343`;
  const sock = connect(channel.socket);
  await new Promise((resolve) => sock.once('connect', resolve));
  sock.write(encodeExec({ argv: [`sleep ${marker}`], timeoutMs: 0, shell: true, kitRoot: true }));
  for (let i = 0; i < 100 && (await processesWith(`sleep ${marker}`)).length === 0; i++) await sleep(20);
  assert.notDeepEqual(await processesWith(`sleep ${marker}`), [], 'the command started');
  sock.destroy();
  for (let i = 0; i < 100 && (await processesWith(`sleep ${marker}`)).length > 0; i++) await sleep(20);
  assert.deepEqual(await processesWith(`sleep ${marker}`), [], 'killed when the host went away');

  // an unknown message type, then an EXEC without argv: ERROR frames, then the agent still answers
  const answers = await new Promise<{ type: number; text: string }[]>((resolve, reject) => {
    const s = connect(channel.socket);
    const d = new FrameDecoder();
    const got: { type: number; text: string }[] = [];
    s.on('data', (c: Buffer) => {
      for (const f of d.push(c)) got.push({ type: f.type, text: f.payload.toString() });
      if (got.length === 2) {
        s.destroy();
        resolve(got);
      }
    });
    s.on('error', reject);
    s.write(Buffer.concat([encodeFrame(0x42), encodeFrame(MSG.EXEC, Buffer.alloc(8))]));
  });
  assert.deepEqual(
    answers.map((a) => a.type),
    [MSG.ERROR, MSG.ERROR],
  );
  assert.match(answers[0].text, /unknown request type/);
  assert.equal(await agentHello(channel), 'embers-agent 1');
  await assert.rejects(agentExec(channel, { argv: ['a', 'b'], shell: true, timeoutMs: 0 }), (e: unknown) =>
    isEmbersError(e, 'EMB_USAGE'),
  );
});
