import { AGENT_PORT_NAME } from '../../guest/agent-protocol.js';
import type { Accelerator, DeviceDiscovery, VmSpec } from '../driver.js';

export interface QemuArgsOptions {
  accelerator: Accelerator;
  /** The `-cpu` value (see QemuDriverOptions.cpuModel). */
  cpuModel: string;
  /** ACPI tables, or devices on the kernel command line (QEMU adds them when ACPI is off). */
  deviceDiscovery: DeviceDiscovery;
  controlSocket: string;
  consoleLog: string;
  /** The guest RAM file. */
  memoryFile: string;
  /** share=on for a booted VM (the file is its live RAM); share=off maps a snapshot's memory privately. */
  shareMemory: boolean;
  /** Wait for a migration stream (restore). */
  incoming: boolean;
  /** The host end of the guest agent's virtio-serial port (a Unix socket QEMU listens on); absent: no port. */
  agentSocket?: string;
}

/**
 * The machine, as Firecracker's: `-M microvm`, no PCI. With 'acpi' discovery the guest finds
 * its virtio-mmio devices in ACPI tables (and powers off through ACPI); with 'cmdline' there
 * is no ACPI and no RTC (as in Firecracker with `acpi=off`): QEMU appends
 * `virtio_mmio.device=…` to the kernel command line (auto-kernel-cmdline), and an i8042 (as
 * Firecracker's) carries ctrl-alt-del to the guest and its reset back to QEMU. The two
 * machines hold different devices, so a snapshot restores only into the kind it came from.
 */
export function microvmMachine(discovery: DeviceDiscovery): { machine: string; devices: string[] } {
  if (discovery === 'cmdline') {
    return {
      machine: 'microvm,acpi=off,rtc=off,pcie=off,auto-kernel-cmdline=on,memory-backend=mem',
      devices: ['-device', 'i8042'],
    };
  }
  return { machine: 'microvm,acpi=on,memory-backend=mem', devices: [] };
}

/**
 * The QEMU command line: `-M microvm` (see microvmMachine), guest RAM in a file, virtio-mmio
 * block and net, QMP on a Unix socket, the serial console in a file, and the guest agent's
 * virtio-serial port when asked for. Restores use the
 * same devices with `-incoming defer`.
 */
export function qemuArgs(spec: VmSpec, o: QemuArgsOptions): string[] {
  const { machine, devices } = microvmMachine(o.deviceDiscovery);
  const args = [
    '-name',
    `embers-${spec.name}`,
    '-M',
    machine,
    '-accel',
    o.accelerator,
    '-cpu',
    o.cpuModel,
    ...devices,
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
  if (o.agentSocket) {
    // the guest agent's channel (src/guest/agent-protocol.ts): virtio-serial over virtio-mmio, no vhost needed
    args.push(
      '-chardev',
      `socket,id=agent,path=${o.agentSocket},server=on,wait=off`,
      '-device',
      'virtio-serial-device',
      '-device',
      `virtserialport,chardev=agent,name=${AGENT_PORT_NAME}`,
    );
  }
  if (o.incoming) args.push('-incoming', 'defer');
  return args;
}
