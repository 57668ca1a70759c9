import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parse } from 'yaml';
import { FIRECRACKER_API_VERSION, FIRECRACKER_OPERATIONS } from '../../src/vmm/firecracker/api-types.js';
import { REPO_ROOT, repoPath } from '../helpers/repo.js';

const VENDORED_SPEC = repoPath('src/vmm/firecracker/firecracker-api.yaml');
const GENERATED = repoPath('src/vmm/firecracker/api-types.ts');
/** CI checks shared/ out beside the repository. */
const SHARED_SPEC = resolve(REPO_ROOT, '..', 'shared', 'firecracker', 'firecracker-api.yaml');

async function generator(): Promise<(specText: string) => string> {
  const mod = (await import(pathToFileURL(repoPath('scripts/gen-firecracker-types.mjs')).href)) as {
    generateFirecrackerTypes: (specText: string) => string;
  };
  return mod.generateFirecrackerTypes;
}

test('api-types.ts is exactly what the generator produces from the vendored spec', async () => {
  const generate = await generator();
  const expected = generate(readFileSync(VENDORED_SPEC, 'utf8'));
  const actual = readFileSync(GENERATED, 'utf8');
  assert.ok(
    actual === expected,
    'src/vmm/firecracker/api-types.ts drifted from src/vmm/firecracker/firecracker-api.yaml: run `npm run gen:firecracker`',
  );
});

test('the vendored spec equals shared/firecracker/firecracker-api.yaml', (t) => {
  if (!existsSync(SHARED_SPEC)) {
    t.skip(
      `${SHARED_SPEC} is absent (CI checks shared/ out at ../shared beside the repo); only the vendored copy was checked`,
    );
    return;
  }
  assert.ok(
    readFileSync(VENDORED_SPEC).equals(readFileSync(SHARED_SPEC)),
    `src/vmm/firecracker/firecracker-api.yaml differs from ${SHARED_SPEC}: copy it over, then run \`npm run gen:firecracker\``,
  );
});

test('the generated operation table covers every operation of the spec, and only those', () => {
  const spec = parse(readFileSync(VENDORED_SPEC, 'utf8')) as {
    info: { version: string };
    paths: Record<string, Record<string, { operationId: string }>>;
  };
  assert.equal(FIRECRACKER_API_VERSION, String(spec.info.version));
  const fromSpec = Object.entries(spec.paths)
    .flatMap(([path, item]) =>
      Object.entries(item).map(([method, op]) => `${method.toUpperCase()} ${path} ${op.operationId}`),
    )
    .sort();
  const generated = Object.entries(FIRECRACKER_OPERATIONS)
    .map(([key, info]) => `${key} ${info.operationId}`)
    .sort();
  assert.deepEqual(generated, fromSpec);
});

test('the drift check notices a change to the spec', async () => {
  const generate = await generator();
  const text = readFileSync(VENDORED_SPEC, 'utf8');
  const changed = text.replace(
    '      vcpu_count:\n        type: integer\n        minimum: 1',
    '      vcpu_count:\n        type: string\n        minimum: 1',
  );
  assert.notEqual(changed, text, 'the test edit applies to the spec');
  assert.notEqual(generate(changed), generate(text));
});
