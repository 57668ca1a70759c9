/**
 * The shape of the `details` of each error code of the catalogue (src/errors.ts). Types only:
 * a code's entry lists the fields a failure of that code may carry, so that every
 * `new EmbersError(code, message, details)` is checked against it and code that branches
 * on a detail reads a typed field (after `isEmbersError(err, code)`), never a cast. Fields are
 * context for people and logs; the few that steer control flow say so. Each area of the
 * catalogue declares its own (src/error-catalogue/).
 */
import type { GeneralErrorDetails } from './error-catalogue/general.js';
import type { ImageErrorDetails } from './error-catalogue/image.js';
import type { SnapshotErrorDetails } from './error-catalogue/snapshot.js';
import type { VmErrorDetails } from './error-catalogue/vm.js';

export type { HostCommandDetails, NoDetails, SnapshotVersionDetails } from './error-catalogue/shared.js';
export type { RegistryRequestDetails } from './error-catalogue/image.js';
export type { S3RequestDetails } from './error-catalogue/snapshot.js';
export type { FirecrackerHostDetails } from './error-catalogue/vm.js';

/** Per code, the shape of its details. */
export interface ErrorDetailsByCode
  extends GeneralErrorDetails,
    ImageErrorDetails,
    VmErrorDetails,
    SnapshotErrorDetails {}
