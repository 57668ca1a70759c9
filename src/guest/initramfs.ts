/**
 * The base initramfs of the guest kit: busybox-static (with its applet links), /init (the
 * shell script in init/), /sbin/embers-exec (the static C helper, compiled here),
 * /sbin/embers-agent (the guest agent, static C, compiled here), and the
 * kernel modules the Debian kernel needs for virtio and ext4, decompressed and listed in
 * load order in /lib/modules/embers.list. Written as one gzip-compressed newc archive with
 * our own cpio writer (every entry owned by root, mtime 0: reproducible).
 */
import { spawn } from 'node:child_process';
import { access, readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { EmbersError } from '../errors.js';
import { requireTool, run } from '../util/exec.js';
import { writeCpio, type CpioEntry } from './cpio.js';
import { guestInitDir } from './paths.js';
import { parseElfHeader } from './vmlinux.js';

/**
 * The modules the Debian kernel needs (their dependencies are added by modprobe): virtio
 * over MMIO for the disk and the network, ext4, and the ACPI power button with evdev so
 * that QEMU's `system_powerdown` reaches the guest's PID 1 as a stop request, and
 * virtio_console for the guest agent's virtio-serial port.
 */
export const DEBIAN_MODULES = [
  'virtio_ring',
  'virtio',
  'virtio_mmio',
  'virtio_blk',
  'failover',
  'net_failover',
  'virtio_net',
  'crc32c_generic',
  'jbd2',
  'mbcache',
  'crc16',
  'ext4',
  'button',
  'evdev',
  'virtio_console',
] as const;

export const INIT_SCRIPT = 'init';
export const EXEC_HELPER_SOURCE = 'embers-exec.c';
export const AGENT_SOURCE = 'embers-agent.c';
/**
 * The headers the helpers include: both share embers-common.h (logging, PATH lookup, clock); embers-exec.c
 * includes embers-users.h (users and groups), embers-agent.c embers-channel.h (the host channel). Header-only,
 * so each helper stays one gcc call; they must sit beside the sources when those are compiled.
 */
export const GUEST_HEADERS = ['embers-common.h', 'embers-users.h', 'embers-channel.h'] as const;

/** The guest-side sources, read from src/guest/init/. */
export async function readGuestSources(): Promise<{
  init: Buffer;
  execSource: Buffer;
  agentSource: Buffer;
  headers: { name: string; data: Buffer }[];
}> {
  const dir = guestInitDir();
  try {
    return {
      init: await readFile(join(dir, INIT_SCRIPT)),
      execSource: await readFile(join(dir, EXEC_HELPER_SOURCE)),
      agentSource: await readFile(join(dir, AGENT_SOURCE)),
      headers: await Promise.all(GUEST_HEADERS.map(async (name) => ({ name, data: await readFile(join(dir, name)) }))),
    };
  } catch (err) {
    throw EmbersError.of(
      'EMB_INTERNAL',
      { problem: `the guest init sources are missing from ${dir}`, dir },
      { cause: err },
    );
  }
}

/** Runs a command and returns its standard output as bytes. */
export function runToBuffer(cmd: string, args: string[], input?: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e: NodeJS.ErrnoException) =>
      reject(e.code === 'ENOENT' ? EmbersError.of('EMB_HOST_TOOL_MISSING', { cmd }, { cause: e }) : e),
    );
    child.stdin.on('error', () => undefined);
    child.on('close', (code) => {
      if (code === 0) resolve(Buffer.concat(out));
      else
        reject(
          EmbersError.of('EMB_HOST_COMMAND_FAILED', {
            cmd,
            args,
            exit: code,
            stderr: Buffer.concat(err).toString().trim().slice(-600),
          }),
        );
    });
    child.stdin.end(input);
  });
}

export interface ModuleRef {
  /** Module name as modprobe prints it (from the file name). */
  name: string;
  /** Path of the .ko(.xz|.zst|.gz) file. */
  path: string;
}

/**
 * The modules to load, in dependency order, for `wanted` in the kernel tree under `root`
 * (an unpacked linux-image package): `depmod -b` then `modprobe -d --show-depends`.
 * Built-in modules are skipped; each module appears once, at its first position.
 */
export async function resolveModules(
  root: string,
  kernelVersion: string,
  wanted: readonly string[],
): Promise<ModuleRef[]> {
  await requireTool('depmod', 'kmod');
  await run('depmod', ['-b', root, kernelVersion]);
  const { stdout } = await run('modprobe', ['-d', root, '-S', kernelVersion, '-a', '--show-depends', ...wanted]);
  const seen = new Set<string>();
  const out: ModuleRef[] = [];
  for (const line of stdout.split('\n')) {
    const m = /^insmod\s+(\S+)/.exec(line.trim());
    if (!m) continue; // "builtin NAME" lines and blanks
    const path = m[1];
    if (seen.has(path)) continue;
    seen.add(path);
    out.push({ name: basename(path).replace(/\.ko(\.(xz|zst|gz))?$/, ''), path });
  }
  if (out.length === 0)
    throw EmbersError.of('EMB_GUEST_BUILD_FAILED', {
      problem: 'modules-not-found',
      modules: wanted,
      root,
      kernelVersion,
      output: stdout,
    });
  return out;
}

/** The bytes of a module, decompressed (busybox insmod loads plain .ko files only). */
export async function loadModule(path: string): Promise<Buffer> {
  const data = await readFile(path);
  let plain: Buffer;
  if (path.endsWith('.ko.xz')) plain = await runToBuffer('xz', ['-dc'], data);
  else if (path.endsWith('.ko.zst')) plain = await runToBuffer('zstd', ['-dc', '-q'], data);
  else if (path.endsWith('.ko.gz')) plain = gunzipSync(data);
  else plain = data;
  if (!parseElfHeader(plain.subarray(0, 64)))
    throw EmbersError.of('EMB_GUEST_BUILD_FAILED', { problem: 'module-not-elf', path });
  return plain;
}

/** True if the ELF file has no PT_INTERP program header (statically linked). */
export function isStaticElf(elf: Buffer): boolean {
  const info = parseElfHeader(elf.subarray(0, 64));
  if (!info || info.bits !== 64 || !info.littleEndian) return false;
  const phoff = Number(elf.readBigUInt64LE(32));
  const phentsize = elf.readUInt16LE(54);
  const phnum = elf.readUInt16LE(56);
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (at + 4 > elf.length) return false;
    if (elf.readUInt32LE(at) === 3 /* PT_INTERP */) return false;
  }
  return true;
}

/** Compiles the exec helper: `gcc -static -Os -s`. */
export async function compileExecHelper(sourcePath: string, outPath: string): Promise<void> {
  await requireTool('gcc', 'gcc');
  try {
    await access('/usr/lib/x86_64-linux-gnu/libc.a');
  } catch {
    throw EmbersError.of(
      'EMB_HOST_TOOL_MISSING',
      { program: 'the static C library', debianPackage: 'libc6-dev' },
      { hint: 'run `apt-get install libc6-dev` or `scripts/setup.sh`' },
    );
  }
  await run('gcc', ['-static', '-Os', '-s', '-Wall', '-o', outPath, sourcePath], { timeoutMs: 5 * 60_000 });
}

export interface BaseInitramfsInput {
  busybox: Buffer;
  /** Output of `busybox --list-full` (applet paths such as "bin/sh", "sbin/ip"). */
  applets: string[];
  init: Buffer;
  execHelper: Buffer;
  /** The guest agent (/sbin/embers-agent, started by /init); absent in kits built before it. */
  agent?: Buffer;
  modules: { file: string; data: Buffer }[];
  /** Recorded in /etc/embers-kit for debugging. */
  info: Record<string, string>;
}

/** Assembles the base initramfs and returns it gzip-compressed. */
export function buildBaseInitramfs(input: BaseInitramfsInput): Buffer {
  const dirs = [
    'bin',
    'sbin',
    'usr',
    'usr/bin',
    'usr/sbin',
    'dev',
    'proc',
    'sys',
    'newroot',
    'embers',
    'lib',
    'lib/modules',
    'etc',
    'tmp',
    'run',
    'root',
  ];
  const entries: CpioEntry[] = dirs.map((name) => ({
    type: 'dir' as const,
    name,
    mode: name === 'tmp' ? 0o1777 : name === 'root' ? 0o700 : 0o755,
  }));
  // the kernel opens /dev/console for init before devtmpfs is mounted
  entries.push({ type: 'chardev', name: 'dev/console', mode: 0o600, major: 5, minor: 1 });
  entries.push({ type: 'chardev', name: 'dev/null', mode: 0o666, major: 1, minor: 3 });
  entries.push({ type: 'file', name: 'bin/busybox', mode: 0o755, data: input.busybox });
  const taken = new Set(['bin/busybox', 'init', 'linuxrc', 'sbin/embers-exec', 'sbin/embers-agent']);
  for (const applet of input.applets) {
    const name = applet.trim().replace(/^\/+/, '');
    if (!name || taken.has(name) || !/^(bin|sbin|usr\/bin|usr\/sbin)\/[^/]+$/.test(name)) continue;
    taken.add(name);
    entries.push({ type: 'symlink', name, target: '/bin/busybox' });
  }
  entries.push({ type: 'file', name: 'init', mode: 0o755, data: input.init });
  entries.push({ type: 'file', name: 'sbin/embers-exec', mode: 0o755, data: input.execHelper });
  if (input.agent) entries.push({ type: 'file', name: 'sbin/embers-agent', mode: 0o755, data: input.agent });
  const names: string[] = [];
  for (const m of input.modules) {
    if (names.includes(m.file))
      throw EmbersError.of('EMB_GUEST_BUILD_FAILED', { problem: 'duplicate-module', file: m.file });
    names.push(m.file);
    entries.push({ type: 'file', name: `lib/modules/${m.file}`, mode: 0o644, data: m.data });
  }
  entries.push({
    type: 'file',
    name: 'lib/modules/embers.list',
    mode: 0o644,
    data: names.map((n) => `${n}\n`).join(''),
  });
  entries.push({
    type: 'file',
    name: 'etc/embers-kit',
    mode: 0o644,
    data: Object.entries(input.info)
      .map(([k, v]) => `${k}=${v}\n`)
      .join(''),
  });
  return gzipSync(writeCpio(entries), { level: 9 });
}
