/** The guest kit: kernel, initramfs, kernel command line and per-instance run configuration. */
export { ensureGuestKit, listGuestKits, readGuestKit, type GuestKit, type GuestKitKind } from './kit.js';
export { kernelCmdline, hostTscKhz, type GuestNetConfig } from './kernel-cmdline.js';
export { buildInstanceInitrd, validateRunConfig, type GuestRunConfig } from './run-config.js';
export { extractVmlinux, assertVmlinux } from './vmlinux.js';
