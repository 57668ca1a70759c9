/**
 * What every area of the error catalogue shares: the spec of an entry, the details any code may
 * carry, and the detail shapes several areas use. The catalogue itself is src/errors.ts, made of
 * one file per area in this folder; each area file declares, per code, the shape of its details
 * and its entry (summary, message template, hint, exit status).
 */

export interface ErrorSpec {
  /** One-line description of the failure, used in docs (the README's table of codes). */
  readonly summary: string;
  /* And, for codes with a standard case, `message`: the message template, a function of the
   * code's typed details (see AreaCatalogue); `EmbersError.of(code, details)` uses it. */
  /** What the user can do about it. */
  readonly hint: string;
  /** Process exit code used by the CLI. */
  readonly exit: number;
}

/** Details any code may carry. */
export interface CommonDetails {
  /** Set by the daemon's lifecycle engine on the error of a cold start that failed: the API
   * answers 502 whatever the code (api/errors.ts). */
  readonly startFailed?: boolean;
  /** The function whose request or start failed (added by the lifecycle engine to any error). */
  readonly function?: string;
  /** The snapshot (or instance) the failure concerns (added to any error of a snapshot's upload). */
  readonly id?: string;
  /** The tail of the VMM's output, added by the Firecracker driver to any error of a VM that failed to start or load. */
  readonly tail?: string;
}

/** The entries of one area: per code of `D` (code → details shape), its spec and, for codes
 * with a standard case, the message template over that code's details. */
export type AreaCatalogue<D> = {
  readonly [C in keyof D]: ErrorSpec & { readonly message?: (d: D[C] & CommonDetails) => string };
};

/** Details of a code that carries none (beyond the fields any error may carry: CommonDetails). */
export type NoDetails = {};

/** A host command that failed (util/exec.ts), also carried by the errors that wrap one. */
export interface HostCommandDetails {
  readonly cmd?: string;
  readonly args?: readonly string[];
  readonly exit?: number | null;
  /** The tail of the command's stderr. */
  readonly stderr?: string;
  /** Why the command could not be started at all (the spawn error's text). */
  readonly spawnError?: string;
  /** How it failed, when not by its exit code: 'killed by SIGTERM', 'timed out after 1000 ms'. */
  readonly failure?: string;
  /** The tail of its output a message shows, when not its stderr (its stdout when stderr is empty). */
  readonly output?: string;
}

/** A snapshot's data format against a Firecracker binary's (vmm/firecracker/version.ts). */
export interface SnapshotVersionDetails {
  readonly binary?: string;
  readonly binaryVersion?: string;
  readonly source?: string;
  readonly snapshotVersion?: string;
  readonly binarySnapshotVersion?: string;
}
