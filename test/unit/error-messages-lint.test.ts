import { test } from 'node:test';
import assert from 'node:assert/strict';
import { repoPath } from '../helpers/repo.js';
import { runOverTree } from '../helpers/source-tree.js';

/**
 * `npm run lint` runs scripts/check-error-messages.mjs over src/: only src/errors.ts may build
 * an EmbersError from a message; everything else uses the catalogue's templates. These tests
 * run the same script over small trees, to prove it can fail.
 */
function check(files: Record<string, string>): Promise<{ status: number | null; output: string }> {
  return runOverTree('embers-error-messages-', files, process.execPath, [
    repoPath('scripts', 'check-error-messages.mjs'),
    'src',
  ]);
}

const clean = {
  'src/errors.ts': 'export class EmbersError extends Error {}\nexport const e = new EmbersError("x");\n',
  'src/node/node.ts':
    "import { EmbersError } from '../errors.js';\n// new EmbersError( in a comment is fine\nexport const f = () => EmbersError.of('EMB_X', {});\n",
};

test('error messages: a tree that builds errors from the catalogue passes', async () => {
  const r = await check(clean);
  assert.equal(r.status, 0, r.output);
});

test('error messages: new EmbersError outside src/errors.ts fails lint, naming the file and line', async () => {
  const r = await check({
    ...clean,
    'src/vmm/select.ts':
      "import { EmbersError } from '../errors.js';\nexport const e = () =>\n  new EmbersError('EMB_VMM_NOT_FOUND', 'no firecracker');\n",
  });
  assert.equal(r.status, 1, r.output);
  assert.match(r.output, /src\/vmm\/select\.ts:3: new EmbersError\('EMB_VMM_NOT_FOUND'/);
});
