import { readFile } from 'node:fs/promises';
import { exists } from '../util/fs.js';
import type { Accelerator } from './driver.js';

export interface AcceleratorChoice {
  accelerator: Accelerator;
  reason: string;
}

/**
 * Decides whether KVM is hardware-backed here. /dev/kvm alone proves nothing: on PVM hosts
 * (module kvm_pvm, no vmx/svm) an ordinary guest is emulated instruction by instruction and
 * then cannot make a system call, so TCG is the right choice there.
 */
export async function detectAccelerator(requested: 'auto' | Accelerator = 'auto'): Promise<AcceleratorChoice> {
  if (requested === 'tcg') return { accelerator: 'tcg', reason: 'TCG requested' };
  const probe = await probeKvm();
  if (requested === 'kvm') {
    return {
      accelerator: 'kvm',
      reason: probe.hardware ? `KVM requested (${probe.reason})` : `KVM requested although ${probe.reason}`,
    };
  }
  return probe.hardware ? { accelerator: 'kvm', reason: probe.reason } : { accelerator: 'tcg', reason: probe.reason };
}

let kvmProbe: Promise<{ hardware: boolean; reason: string }> | undefined;

/** What this host's KVM is, probed once per process: the host does not change under a running node. */
function probeKvm(): Promise<{ hardware: boolean; reason: string }> {
  kvmProbe ??= probeKvmNow();
  return kvmProbe;
}

async function probeKvmNow(): Promise<{ hardware: boolean; reason: string }> {
  if (!(await exists('/dev/kvm'))) return { hardware: false, reason: '/dev/kvm is absent' };
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  const flags = new Set((/^flags\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? '').split(/\s+/));
  const hasModule = (m: string) => exists(`/sys/module/${m}`);
  const intel = await hasModule('kvm_intel');
  const amd = await hasModule('kvm_amd');
  const pvm = await hasModule('kvm_pvm');
  if (intel || amd) return { hardware: true, reason: `/dev/kvm backed by ${intel ? 'kvm_intel' : 'kvm_amd'}` };
  if (flags.has('vmx') || flags.has('svm'))
    return { hardware: true, reason: `/dev/kvm present and the CPU has ${flags.has('vmx') ? 'vmx' : 'svm'}` };
  if (pvm)
    return { hardware: false, reason: '/dev/kvm is PVM (kvm_pvm, no vmx/svm): ordinary guests cannot run on it' };
  return { hardware: false, reason: '/dev/kvm present but the CPU has no vmx/svm flag' };
}
