export type {
  FlattenedImage,
  ImageConfig,
  EnsureOptions,
  PullImageOptions,
  ImageInspect,
  ImageLayerInfo,
  ImageListEntry,
  RemoveOptions,
  RemoveResult,
  GcResult,
} from './types.js';
export { ImageStore } from './store.js';
export { FLATTENER_VERSION, ROOTFS_EPOCH, ROOTFS_HEADROOM_BYTES, rootfsIds } from './flatten.js';
export { locateImage, pinImageReference, type ImageLocation } from './locate.js';
export { parseImageReference, formatImageReference, type ImageReference } from './registry/reference.js';
export { DEFAULT_INSECURE_REGISTRIES, type RegistryOptions } from './registry/options.js';
export {
  describePullEvent,
  pullProgressDisplay,
  type PullEvent,
  type PullLayerInfo,
  type PullProgressListener,
} from './registry/progress.js';
export { formatGcResult, formatImageInspect, formatImageList, formatRemoveResult } from './report.js';
