export type { FlattenedImage, ImageConfig } from './types.js';
export {
  ImageStore,
  type EnsureOptions,
  type PullImageOptions,
  type ImageInspect,
  type ImageLayerInfo,
  type ImageListEntry,
  type RemoveOptions,
  type RemoveResult,
  type GcResult,
} from './store.js';
export { FLATTENER_VERSION, ROOTFS_EPOCH, ROOTFS_HEADROOM_BYTES, rootfsIds } from './flatten.js';
export { locateImage, pinImageReference, type ImageLocation } from './locate.js';
export { parseImageReference, formatImageReference, type ImageReference } from './registry/reference.js';
export { DEFAULT_INSECURE_REGISTRIES, type RegistryOptions } from './registry/options.js';
export { describePullEvent, pullProgressDisplay, type PullEvent, type PullLayerInfo, type PullProgressListener } from './registry/progress.js';
export { formatGcResult, formatImageInspect, formatImageList, formatRemoveResult } from './report.js';
