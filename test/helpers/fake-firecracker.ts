/**
 * Helpers for tests that drive the fake Firecracker (test/fixtures/fake-firecracker.mjs):
 * VM specs with stand-in kernel, initrd and disk files, its per-instance knobs and the log
 * of every request it received.
 */
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { VmSpec } from '../../src/vmm/driver.js';
import { repoPath } from './repo.js';

export const FAKE_FIRECRACKER = repoPath('test/fixtures/fake-firecracker.mjs');

export interface FakeKnobs {
  dieAtStart?: string;
  faults?: Record<string, string>;
  ignoreCtrlAltDel?: boolean;
  ignoreSigterm?: boolean;
  /** A stand-in guest agent answers HELLO on vsock port 5252 while the VM runs. */
  guestAgent?: boolean;
  /** A `Uffd` load runs this harness (test/fixtures/uffd-harness.c) as the guest's memory: a real userfaultfd handshake,
   * pages touched (order: a ranges file, `seq` or `random:SEED`) once the VM is resumed, each checked against memoryFile. */
  uffdGuest?: { harness: string; memoryFile: string; order?: string; threads?: number };
}

export interface RecordedRequest {
  t: number;
  pid: number;
  method?: string;
  url?: string;
  template?: string;
  body?: Record<string, unknown>;
  ok?: boolean;
  errors?: string[];
  status?: number;
  fault?: string;
  event?: string;
  signal?: string;
}

export async function ensureFakeExecutable(): Promise<string> {
  await chmod(FAKE_FIRECRACKER, 0o755);
  return FAKE_FIRECRACKER;
}

/** A VM spec in `root/<name>` with stand-in kernel/initrd (shared) and a disk holding `disk-<name>`. */
export async function makeSpec(root: string, name: string, over: Partial<VmSpec> = {}): Promise<VmSpec> {
  const dir = join(root, name);
  await mkdir(dir, { recursive: true });
  const kernelPath = join(root, 'vmlinux');
  const initrdPath = join(root, 'initrd.img');
  await writeFile(kernelPath, '\x7fELF stand-in kernel', { flag: 'a' });
  await writeFile(initrdPath, 'stand-in initrd', { flag: 'a' });
  const diskPath = join(dir, 'disk.img');
  await writeFile(diskPath, Buffer.concat([Buffer.from(`disk-${name}`), Buffer.alloc(4096)]));
  return {
    name,
    dir,
    kernelPath,
    initrdPath,
    cmdline: 'console=ttyS0 reboot=k panic=1 embers.ip=172.16.0.2/30 embers.gw=172.16.0.1',
    diskPath,
    vcpus: 2,
    memoryMiB: 64,
    network: { netns: `embers-test-${name}`, tapName: 'tap0', guestMac: 'AA:FC:00:00:00:01' },
    ...over,
  };
}

export async function setKnobs(dir: string, knobs: FakeKnobs): Promise<void> {
  await writeFile(join(dir, 'fake-firecracker.json'), JSON.stringify(knobs));
}

/** Everything the fake in `dir` received, in order. */
export async function recorded(dir: string): Promise<RecordedRequest[]> {
  const text = await readFile(join(dir, 'fake-firecracker.requests.jsonl'), 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as RecordedRequest);
}

/** Only the API requests, as "METHOD /template". */
export function operations(reqs: RecordedRequest[]): string[] {
  return reqs.filter((r) => r.method).map((r) => `${r.method} ${r.template ?? r.url}`);
}

export function find(reqs: RecordedRequest[], op: string): RecordedRequest[] {
  return reqs.filter((r) => r.method && `${r.method} ${r.template ?? r.url}` === op);
}

/**
 * The file's text once it exists and is not empty (written by another process: the
 * stand-in's uffd guest, its page server).
 */
export async function waitForFile(path: string, timeoutMs = 30_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = await readFile(path, 'utf8').catch(() => '');
    if (text) return text;
    if (Date.now() > deadline) throw new Error(`${path} was not written within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
