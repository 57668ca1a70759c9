/**
 * What a guest kit is: the files of a published kit, its manifest (kit.json) and the inputs
 * its cache key hashes (see kit.ts for the cache, kit-inputs.ts for how the inputs are found,
 * kit-build.ts for how a kit is built).
 */
import type { KernelPackage } from './apt.js';

export interface GuestKit {
  /** ELF vmlinux. */
  kernelPath: string;
  /** Base initramfs (gzip newc cpio). */
  initrdPath: string;
  /** e.g. "6.1.0-57-amd64". */
  kernelVersion: string;
  kind: 'debian' | 'firecracker-config';
  /** Hash of the inputs. */
  cacheKey: string;
}

export type GuestKitKind = GuestKit['kind'];

/** Bump when the kit layout or the way it is built changes (it is part of the cache key). */
export const KIT_FORMAT = 3;
export const MANIFEST = 'kit.json';
export const KERNEL_FILE = 'vmlinux';
export const INITRD_FILE = 'initrd.img';

export interface BusyboxInput {
  package: string;
  version: string;
  /** '/bin/busybox' when busybox-static is installed on the host, 'download' otherwise. */
  from: string;
}

export interface KitInputs {
  format: number;
  kind: GuestKitKind;
  kernel: { package: string; version: string; meta?: { package: string; version: string }; config?: string };
  kernelVersion?: string;
  busybox: BusyboxInput;
  init: string;
  execHelper: string;
  /** sha256 of the guest agent's source. */
  agent: string;
  /** sha256 of each header the exec helper and the agent include, by file name. */
  headers: Record<string, string>;
  modules: string[];
}

export interface KitManifest {
  format: number;
  kind: GuestKitKind;
  cacheKey: string;
  kernelVersion: string;
  kernel: string;
  initrd: string;
  inputs: KitInputs;
  modules: string[];
  sizes: { kernel: number; initrd: number };
  sha256: { kernel: string; initrd: string };
  builtAt: string;
  buildSeconds: number;
}

export interface Resolved {
  inputs: KitInputs;
  key: string;
  sources: { init: Buffer; execSource: Buffer; agentSource: Buffer; headers: { name: string; data: Buffer }[] };
  kernelPackage?: KernelPackage;
}
