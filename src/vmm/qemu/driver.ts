import { rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { EmbersError } from '../../errors.js';
import { run, which } from '../../util/exec.js';
import { detectAccelerator } from '../accel.js';
import type {
  Accelerator,
  DeviceDiscovery,
  HypervisorDriver,
  RestoreOptions,
  VmHandle,
  VmSnapshotFiles,
  VmSpec,
  VmState,
  VmTimings,
} from '../driver.js';
import type { GuestCpu } from '../host-cpu.js';
import { pidCommandMentions, sleep, spawnDetached, terminate, waitForExit, waitForPath } from '../process.js';
import { qemuArgs } from './args.js';
import { QmpClient } from './qmp.js';

export interface QemuDriverOptions {
  /** 'auto' picks KVM when hardware-backed, TCG otherwise. @default 'auto' */
  accel?: 'auto' | Accelerator;
  /** The QEMU binary. @default 'qemu-system-x86_64' */
  binary?: string;
  /** How long to wait for QEMU's QMP socket. @default 15000 */
  startTimeoutMs?: number;
  /** How long a running guest gets to power off cleanly before QEMU is told to quit. @default 15000 */
  powerdownTimeoutMs?: number;
  /**
   * The CPU model the guest sees (QEMU `-cpu`, e.g. "Skylake-Client-v4" or "EPYC-v3", feature
   * flags allowed: "Nehalem-v2,+aes"). Snapshots record it, and a restore under another model
   * is refused (EMB_SNAPSHOT_HOST_MISMATCH). The policy:
   * - under TCG, 'max' (everything TCG emulates) depends only on the QEMU release, not on the
   *   host: such snapshots move between any hosts with the same QEMU release series;
   * - under KVM, 'host' gives the guest the host's own CPU (fastest, every feature), so its
   *   snapshots restore only on hosts of the same vendor with at least the same flags; for
   *   snapshots that move between different KVM hosts, name the oldest CPU model all of them
   *   support: embers then passes `,enforce`, so a host lacking a feature of the model
   *   refuses to start the VM instead of hiding the feature from the guest.
   * @default 'host' under KVM, 'max' under TCG
   */
  cpuModel?: string;
  /** How guests find their virtio-mmio devices: ACPI tables, or the kernel command line (no ACPI, no RTC). @default 'acpi' */
  deviceDiscovery?: DeviceDiscovery;
  /** Give every VM the guest agent's virtio-serial port (host side `<dir>/agent.sock`). @default true */
  agent?: boolean;
}

const CPU_MODEL_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*(,[+-]?[A-Za-z0-9._-]+(=[A-Za-z0-9._-]+)?)*$/;

const STATE_FILE = 'vmstate.bin';
const AGENT_SOCKET = 'agent.sock';
const MEMORY_FILE = 'memory.bin';

/**
 * The QEMU driver: `-M microvm`, QMP, guest RAM in a file. Snapshots follow Firecracker's
 * model: device state in a small file (`x-ignore-shared` leaves the RAM out of the stream),
 * guest memory in a file of its own; restores map that file privately (copy-on-write), so
 * clones share its page cache.
 */
export class QemuDriver implements HypervisorDriver {
  readonly kind = 'qemu' as const;
  /**
   * With ACPI the guest powers off when asked to stop (power button); without ACPI it cannot
   * power off, so it halts by rebooting (i8042 reset), on which QEMU exits (-no-reboot).
   */
  readonly guestKernelArgs: readonly string[];
  readonly deviceDiscovery: DeviceDiscovery;
  readonly driveLayout = 'plain' as const;
  private readonly binary: string;
  private readonly startTimeoutMs: number;
  private readonly powerdownTimeoutMs: number;
  private binaryPath: Promise<string> | undefined;
  private versionP: Promise<string> | undefined;

  constructor(private readonly opts: QemuDriverOptions = {}) {
    this.binary = opts.binary ?? 'qemu-system-x86_64';
    this.startTimeoutMs = opts.startTimeoutMs ?? 15_000;
    this.powerdownTimeoutMs = opts.powerdownTimeoutMs ?? 15_000;
    this.deviceDiscovery = opts.deviceDiscovery ?? 'acpi';
    if (this.deviceDiscovery !== 'acpi' && this.deviceDiscovery !== 'cmdline') {
      throw EmbersError.of('EMB_CONFIG_INVALID', {
        option: 'device discovery',
        value: this.deviceDiscovery,
        expected: 'acpi or cmdline',
      });
    }
    this.guestKernelArgs = this.deviceDiscovery === 'cmdline' ? ['embers.halt=reboot'] : [];
    if (opts.cpuModel !== undefined && !CPU_MODEL_RE.test(opts.cpuModel)) {
      throw EmbersError.of('EMB_CONFIG_INVALID', {
        option: 'QEMU CPU model',
        value: opts.cpuModel,
        problem: 'is not a model name with optional ,+flag/,-flag/,prop=value',
      });
    }
  }

  /** The CPU the guest sees: the configured model, else 'host' under KVM and 'max' under TCG. */
  async guestCpu(): Promise<GuestCpu> {
    const { accelerator } = await this.accelerator();
    const model = this.opts.cpuModel ?? (accelerator === 'kvm' ? 'host' : 'max');
    // under KVM, 'host' and 'max' pass the host's CPU through; under TCG every model is emulated
    const name = model.split(',')[0];
    return { model, hostDependent: accelerator === 'kvm' && (name === 'host' || name === 'max') };
  }

  /** The `-cpu` argument: a named model under KVM gets `enforce` (see cpuModel). */
  private async cpuArg(accelerator: Accelerator): Promise<string> {
    const { model, hostDependent } = await this.guestCpu();
    return accelerator === 'kvm' && !hostDependent && !/(^|,)enforce(=|,|$)/.test(model) ? `${model},enforce` : model;
  }

  accelerator(): Promise<{ accelerator: Accelerator; reason: string }> {
    return detectAccelerator(this.opts.accel ?? 'auto');
  }

  /** The binary's version, "7.2.22": asked once per driver, as every restore checks it. */
  version(): Promise<string> {
    this.versionP ??= (async () => {
      const { stdout } = await run(await this.resolveBinary(), ['--version']);
      return /version\s+(\S+)/.exec(stdout)?.[1] ?? stdout.split('\n')[0];
    })();
    this.versionP.catch(() => (this.versionP = undefined));
    return this.versionP;
  }

  /**
   * QEMU's migration stream format follows the QEMU release; embers restores only with the
   * same major.minor release that wrote the snapshot (microvm has no versioned machine type).
   */
  async snapshotFormat(): Promise<string> {
    return `qemu-${await this.version()}`;
  }

  async checkSnapshotFormat(recorded: string, source = 'the snapshot'): Promise<void> {
    const here = await this.snapshotFormat();
    const series = (v: string) => /^qemu-(\d+\.\d+)/.exec(v)?.[1];
    if (!series(recorded) || series(recorded) !== series(here)) {
      throw EmbersError.of(
        'EMB_SNAPSHOT_INCOMPATIBLE',
        { problem: 'qemu-release', source, recorded, here },
        {
          hint: 'restore it on a host with the same QEMU release series, or create a new snapshot here',
        },
      );
    }
  }

  async boot(spec: VmSpec): Promise<{ vm: VmHandle; timings: VmTimings }> {
    const { accelerator } = await this.accelerator();
    const vm = this.handle(
      spec,
      accelerator,
      join(spec.dir, 'guest-memory'),
      this.deviceDiscovery,
      this.opts.agent ?? true,
    );
    const args = qemuArgs(spec, {
      agentSocket: vm.agent?.socket,
      accelerator,
      cpuModel: await this.cpuArg(accelerator),
      deviceDiscovery: this.deviceDiscovery,
      controlSocket: vm.controlSocket,
      consoleLog: vm.consoleLog,
      memoryFile: vm.memoryFile,
      shareMemory: true,
      incoming: false,
    });
    return this.start(vm, args, async () => undefined);
  }

  async restore(
    spec: VmSpec,
    files: VmSnapshotFiles,
    opts: RestoreOptions = {},
  ): Promise<{ vm: VmHandle; timings: VmTimings }> {
    if (opts.pageServer) {
      throw EmbersError.of(
        'EMB_CONFIG_INVALID',
        {
          option: 'the page-server (userfaultfd) memory backend',
          problem: `is not possible with QEMU, which maps the memory file of ${spec.name}`,
        },
        {
          hint: "prefetch a working set through the memory file's page cache instead",
        },
      );
    }
    const { accelerator } = await this.accelerator();
    const discovery = opts.deviceDiscovery ?? this.deviceDiscovery;
    const vm = this.handle(
      spec,
      accelerator,
      files.memoryFile,
      discovery,
      opts.snapshotHasAgent ?? this.opts.agent ?? true,
    );
    const args = qemuArgs(spec, {
      agentSocket: vm.agent?.socket,
      accelerator,
      cpuModel: await this.cpuArg(accelerator),
      deviceDiscovery: discovery,
      controlSocket: vm.controlSocket,
      consoleLog: vm.consoleLog,
      memoryFile: files.memoryFile,
      shareMemory: false,
      incoming: true,
    });
    return this.start(vm, args, async (qmp) => {
      await setMigrationCapabilities(qmp);
      await qmp.execute('migrate-incoming', { uri: `exec:cat ${shellQuote(files.stateFile)}` });
      await waitMigration(qmp, 60_000);
      if (opts.resume !== false) await qmp.execute('cont');
    });
  }

  async pause(vm: VmHandle): Promise<void> {
    await this.withQmp(vm, (qmp) => qmp.execute('stop'));
  }

  async resume(vm: VmHandle): Promise<void> {
    await this.withQmp(vm, (qmp) => qmp.execute('cont'));
  }

  async snapshot(vm: VmHandle, outDir: string): Promise<VmSnapshotFiles> {
    const stateFile = join(outDir, STATE_FILE);
    const memoryFile = join(outDir, MEMORY_FILE);
    await this.withQmp(vm, async (qmp) => {
      const status = await qmp.execute<{ status: string }>('query-status');
      if (status.status === 'running') {
        throw EmbersError.of('EMB_VMM_COMMAND_FAILED', { problem: 'not-paused', vm: vm.name });
      }
      await setMigrationCapabilities(qmp);
      await qmp.execute('migrate', { uri: `exec:cat > ${shellQuote(stateFile)}` });
      await waitMigration(qmp, 60_000);
    });
    // The memory file is the live RAM: copy it while the VM is still paused.
    await run('cp', ['--reflink=auto', '--sparse=always', vm.memoryFile, memoryFile]);
    return { stateFile, memoryFile, agent: vm.agent !== undefined };
  }

  /**
   * Stops the VM: a running guest is asked to stop (the ACPI power button, or without ACPI
   * ctrl-alt-del through the i8042; its init stops the function and unmounts the disk
   * cleanly), then QEMU is told to quit, then SIGTERM, then SIGKILL — each step only if the
   * one before did not end the process.
   */
  async stop(vm: VmHandle): Promise<void> {
    if (await this.isOurs(vm)) {
      const running = (await this.status(vm)) === 'running';
      if (running) {
        const ask =
          vm.deviceDiscovery === 'cmdline'
            ? (qmp: QmpClient) =>
                qmp.execute(
                  'send-key',
                  { keys: ['ctrl', 'alt', 'delete'].map((k) => ({ type: 'qcode', data: k })) },
                  2000,
                )
            : (qmp: QmpClient) => qmp.execute('system_powerdown', undefined, 2000);
        await this.withQmp(vm, ask, 2000).catch(() => undefined);
      }
      if (!running || !(await waitForExit(vm.pid, this.powerdownTimeoutMs))) {
        await this.withQmp(vm, (qmp) => qmp.execute('quit', undefined, 2000), 2000).catch(() => undefined);
        if (!(await waitForExit(vm.pid, 3000))) await terminate(vm.pid);
      }
    }
    await rm(vm.controlSocket, { force: true });
    if (vm.agent) await rm(vm.agent.socket, { force: true });
  }

  async status(vm: VmHandle): Promise<VmState> {
    if (!(await this.isOurs(vm))) return 'stopped';
    try {
      const s = await this.withQmp(
        vm,
        (qmp) => qmp.execute<{ status: string; running: boolean }>('query-status'),
        3000,
      );
      return s.running ? 'running' : 'paused';
    } catch {
      return 'unknown';
    }
  }

  /** True if the handle's pid is alive and still this VM's QEMU (pids are reused). */
  isOurs(vm: VmHandle): Promise<boolean> {
    return pidCommandMentions(vm.pid, vm.controlSocket);
  }

  private handle(
    spec: VmSpec,
    accelerator: Accelerator,
    memoryFile: string,
    deviceDiscovery: DeviceDiscovery,
    agent: boolean,
  ): VmHandle {
    return {
      ...(agent ? { agent: { kind: 'virtio-serial' as const, socket: join(spec.dir, AGENT_SOCKET) } } : {}),
      deviceDiscovery,
      kind: 'qemu',
      name: spec.name,
      pid: 0,
      dir: spec.dir,
      accelerator,
      controlSocket: join(spec.dir, 'qmp.sock'),
      consoleLog: join(spec.dir, 'console.log'),
      vmmLog: join(spec.dir, 'vmm.log'),
      memoryFile,
      spec,
    };
  }

  private async start(
    vm: VmHandle,
    args: string[],
    afterConnect: (qmp: QmpClient) => Promise<void>,
  ): Promise<{ vm: VmHandle; timings: VmTimings }> {
    const bin = await this.resolveBinary();
    await rm(vm.controlSocket, { force: true });
    const t0 = performance.now();
    const proc = await spawnDetached('ip', ['netns', 'exec', vm.spec.network.netns, bin, ...args], vm.vmmLog);
    vm.pid = proc.pid;
    try {
      await waitForPath(vm.controlSocket, proc.exited, this.startTimeoutMs, `QEMU for ${vm.name}`, vm.vmmLog);
      const qmp = await this.connectWhileStarting(vm, proc.exited, performance.now() + this.startTimeoutMs);
      const spawnMs = performance.now() - t0;
      try {
        const t1 = performance.now();
        await afterConnect(qmp);
        return { vm, timings: { spawnMs, loadMs: performance.now() - t1 } };
      } finally {
        qmp.close();
      }
    } catch (err) {
      await terminate(proc.pid).catch(() => undefined);
      await rm(vm.controlSocket, { force: true });
      if (vm.agent) await rm(vm.agent.socket, { force: true });
      throw err;
    }
  }

  /** The socket file exists from bind() on; QEMU listens a moment later: retry until then. */
  private async connectWhileStarting(vm: VmHandle, exited: Promise<unknown>, deadline: number): Promise<QmpClient> {
    let dead = false;
    void exited.then(() => (dead = true));
    for (;;) {
      try {
        return await QmpClient.connect(vm.controlSocket, Math.max(500, deadline - performance.now()));
      } catch (err) {
        if (dead || performance.now() > deadline) throw err;
        await sleep(10);
      }
    }
  }

  private async withQmp<T>(vm: VmHandle, fn: (qmp: QmpClient) => Promise<T>, timeoutMs = 10_000): Promise<T> {
    const qmp = await QmpClient.connect(vm.controlSocket, timeoutMs);
    try {
      return await fn(qmp);
    } finally {
      qmp.close();
    }
  }

  /** The binary's path, looked up once per driver (a failed lookup is retried next time). */
  private resolveBinary(): Promise<string> {
    this.binaryPath ??= (async () => {
      const found = this.binary.includes('/') ? this.binary : await which(this.binary);
      if (
        !found ||
        !(await stat(found).then(
          () => true,
          () => false,
        ))
      ) {
        throw EmbersError.of(
          'EMB_VMM_NOT_FOUND',
          { problem: 'binary', vmm: 'QEMU', binary: this.binary },
          { hint: 'install it: `apt-get install qemu-system-x86`' },
        );
      }
      return found;
    })();
    this.binaryPath.catch(() => (this.binaryPath = undefined));
    return this.binaryPath;
  }
}

/** Both directions of a snapshot: leave the RAM (a shared memory-backend file) out of the stream, and report progress as events. */
function setMigrationCapabilities(qmp: QmpClient): Promise<unknown> {
  return qmp.execute('migrate-set-capabilities', {
    capabilities: [
      { capability: 'x-ignore-shared', state: true },
      { capability: 'events', state: true },
    ],
  });
}

async function waitMigration(qmp: QmpClient, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const info = await qmp.execute<{ status?: string; 'error-desc'?: string }>('query-migrate');
    if (info.status === 'completed') return;
    if (info.status === 'failed' || info.status === 'cancelled') {
      throw EmbersError.of('EMB_VMM_COMMAND_FAILED', { problem: 'migration', migrate: info });
    }
    if (Date.now() > deadline)
      throw EmbersError.of('EMB_VMM_TIMEOUT', { problem: 'migration', timeoutMs, migrate: info });
    await sleep(5);
  }
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
