/** Bearer tokens, checked in constant time. */
import { timingSafeEqual } from 'node:crypto';
import { sha256 } from './fs.js';

/**
 * A check of an Authorization header against `Bearer <token>`. Both sides are hashed, so the
 * comparison takes the same time whatever the length of what was sent.
 */
export function bearerTokenCheck(token: string): (authorization: string | undefined) => boolean {
  const expected = Buffer.from(sha256(`Bearer ${token}`), 'hex');
  return (authorization) => timingSafeEqual(Buffer.from(sha256(authorization ?? ''), 'hex'), expected);
}
