import type { Accelerator, VmSpec } from '../driver.js';

export interface QemuArgsOptions {
  accelerator: Accelerator;
  controlSocket: string;
  consoleLog: string;
  /** The guest RAM file. */
  memoryFile: string;
  /** share=on for a booted VM (the file is its live RAM); share=off maps a snapshot's memory privately. */
  shareMemory: boolean;
  /** Wait for a migration stream (restore). */
  incoming: boolean;
}

/**
 * The QEMU command line: `-M microvm` with ACPI (Debian's kernel finds virtio-mmio devices
 * through ACPI), guest RAM in a file, virtio-mmio block and net, QMP on a Unix socket and the
 * serial console in a file. Restores use the same devices with `-incoming defer`.
 */
export function qemuArgs(spec: VmSpec, o: QemuArgsOptions): string[] {
  const args = [
    '-name',
    `embers-${spec.name}`,
    '-M',
    'microvm,acpi=on,memory-backend=mem',
    '-accel',
    o.accelerator,
    '-cpu',
    o.accelerator === 'kvm' ? 'host' : 'max',
    '-smp',
    String(spec.vcpus),
    '-m',
    `${spec.memoryMiB}M`,
    '-object',
    `memory-backend-file,id=mem,size=${spec.memoryMiB}M,mem-path=${o.memoryFile},share=${o.shareMemory ? 'on' : 'off'}`,
    '-nodefaults',
    '-no-user-config',
    '-nographic',
    '-no-reboot',
    '-chardev',
    `file,id=console,path=${o.consoleLog}`,
    '-serial',
    'chardev:console',
    '-kernel',
    spec.kernelPath,
    '-initrd',
    spec.initrdPath,
    '-append',
    spec.cmdline,
    '-drive',
    `id=root,file=${spec.diskPath},format=raw,if=none,cache=writeback,discard=unmap`,
    '-device',
    'virtio-blk-device,drive=root',
    '-netdev',
    `tap,id=net0,ifname=${spec.network.tapName},script=no,downscript=no`,
    '-device',
    `virtio-net-device,netdev=net0,mac=${spec.network.guestMac}`,
    '-qmp',
    `unix:${o.controlSocket},server=on,wait=off`,
  ];
  if (o.incoming) args.push('-incoming', 'defer');
  return args;
}
