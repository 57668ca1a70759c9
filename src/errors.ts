/**
 * The one error catalogue of embers. Every failure the system reports has a stable
 * `code` (EMB_<AREA>_<WHAT>): callers branch on the code, never on message text.
 * Each entry says what failed and, in `hint`, what to do next. The entries live in one file
 * per area (src/error-catalogue/): each declares its codes' details and specs.
 */
import type { ErrorDetailsByCode } from './error-details.js';
import { GENERAL_ERRORS } from './error-catalogue/general.js';
import { IMAGE_ERRORS } from './error-catalogue/image.js';
import type { CommonDetails, ErrorSpec } from './error-catalogue/shared.js';
import { SNAPSHOT_ERRORS } from './error-catalogue/snapshot.js';
import { VM_ERRORS } from './error-catalogue/vm.js';

export type { ErrorDetailsByCode, RegistryRequestDetails } from './error-details.js';
export type { ErrorSpec } from './error-catalogue/shared.js';

/** Every code: its summary, hint, exit status and, for codes with a standard case, message template. */
export const ERRORS = {
  ...GENERAL_ERRORS,
  ...IMAGE_ERRORS,
  ...VM_ERRORS,
  ...SNAPSHOT_ERRORS,
} as const satisfies Catalogue;

/** The catalogue's type: per code, its spec and, for codes with a standard case, the message template. */
type Catalogue = {
  readonly [C in keyof ErrorDetailsByCode]: ErrorSpec & { readonly message?: (d: ErrorDetails<C>) => string };
};
/** ERRORS seen through its type, so that a code's template takes that code's details. */
const CATALOGUE: Catalogue = ERRORS;

/** Every code of the catalogue (ERRORS has exactly the codes of ErrorDetailsByCode). */
export type ErrorCode = keyof ErrorDetailsByCode;

type KeysOfEach<T> = T extends unknown ? keyof T : never;
/** Every detail field of any code. */
type DetailKey = KeysOfEach<ErrorDetailsByCode[ErrorCode]> | keyof CommonDetails;

/**
 * The details of code `C`. The fields of other codes are there as `undefined`, so that the
 * details of an error whose code is not known (a union) can still be read field by field;
 * narrow with `isEmbersError(err, code)` to read a code's own fields with their types.
 */
export type ErrorDetails<C extends ErrorCode = ErrorCode> = C extends ErrorCode
  ? ErrorDetailsByCode[C] &
      CommonDetails & {
        readonly [K in Exclude<DetailKey, keyof ErrorDetailsByCode[C] | keyof CommonDetails>]?: undefined;
      }
  : never;

export interface EmbersErrorOptions {
  cause?: unknown;
  /** Replaces the catalogue's hint when the failure knows better what to do. */
  hint?: string;
}

/**
 * The base class of every error embers reports. Generic over its code: `new EmbersError(code,
 * message, details)` is compile-checked against that code's details, and `isEmbersError(err,
 * code)` gives back typed details.
 */
export class EmbersError<C extends ErrorCode = ErrorCode> extends Error {
  override readonly name = 'EmbersError';
  readonly code: C;
  readonly hint: string;
  /** Structured context: the input that failed, paths, command output tails (typed per code). */
  readonly details: ErrorDetails<C>;

  constructor(code: C, message: string, details?: NoInfer<ErrorDetails<C>>, options?: EmbersErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.hint = options?.hint ?? ERRORS[code].hint;
    this.details = details ?? ({} as ErrorDetails<C>);
  }

  /** The standard case of `code`: its message comes from the catalogue's template. */
  static of<C extends ErrorCode>(
    code: C,
    details: NoInfer<ErrorDetails<C>>,
    options?: EmbersErrorOptions,
  ): EmbersError<C> {
    return new EmbersError(code, errorMessage(code, details), details, options);
  }

  /**
   * An error another embers process reported (the daemon's API answer: code, message, hint),
   * rebuilt as it was told: its message was made from the catalogue over there.
   */
  static received(
    code: ErrorCode,
    message: string,
    details: ErrorDetails,
    options: EmbersErrorOptions & { hint: string },
  ): EmbersError {
    return new EmbersError(code, message, details, options);
  }

  /**
   * The same failure seen from further out: the same code, `context` (if any) put before the
   * message, more details, and optionally a better hint. The cause is this error unless given.
   */
  within(context: string | undefined, extra: Partial<ErrorDetails<C>>, options?: EmbersErrorOptions): EmbersError<C> {
    const message = context === undefined ? this.message : `${context}: ${this.message}`;
    const details = { ...this.details, ...extra } as ErrorDetails<C>;
    return new EmbersError(this.code, message, details, {
      cause: options?.cause ?? this,
      hint: options?.hint ?? this.hint,
    });
  }

  get exitCode(): number {
    return ERRORS[this.code].exit;
  }

  toJSON(): Record<string, unknown> {
    return { code: this.code, message: this.message, hint: this.hint, details: this.details };
  }
}

/** The catalogue's message for `code` with these details: its template, else its summary. */
export function errorMessage<C extends ErrorCode>(code: C, details: ErrorDetails<C>): string {
  const spec = CATALOGUE[code];
  return spec.message?.(details) ?? spec.summary;
}

export function isEmbersError<C extends ErrorCode = ErrorCode>(err: unknown, code?: C): err is EmbersError<C> {
  return err instanceof EmbersError && (code === undefined || err.code === code);
}

/** Wraps an unknown thrown value as an EmbersError, keeping EmbersErrors as they are. */
export function asEmbersError(err: unknown, code: ErrorCode = 'EMB_INTERNAL', message?: string): EmbersError {
  if (err instanceof EmbersError) return err;
  const text = err instanceof Error ? err.message : String(err);
  return new EmbersError(code, message ? `${message}: ${text}` : text, {}, { cause: err });
}
