export type { FlattenedImage, ImageConfig } from './types.js';
export { ImageStore, type EnsureOptions } from './store.js';
export { FLATTENER_VERSION, ROOTFS_EPOCH, ROOTFS_HEADROOM_BYTES, rootfsIds } from './flatten.js';
