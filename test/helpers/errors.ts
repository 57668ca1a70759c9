import assert from 'node:assert/strict';
import { isEmbersError } from '../../src/errors.js';

/**
 * A validator for assert.rejects/throws: the error is an EmbersError with `code`, and its
 * message names each of `inMessage`. `onError` sees it first (e.g. to log what a user reads).
 */
export function embersErrorWith(code: string, inMessage: string[], onError?: (line: string) => void) {
  return (err: unknown): true => {
    assert.ok(isEmbersError(err), `expected an EmbersError, got ${String(err)}`);
    onError?.(`${err.code}: ${err.message}`);
    assert.equal(err.code, code, err.message);
    for (const text of inMessage) assert.ok(err.message.includes(text), `"${err.message}" should name ${text}`);
    return true;
  };
}
