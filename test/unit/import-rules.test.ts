import { test } from 'node:test';
import assert from 'node:assert/strict';
import { repoPath } from '../helpers/repo.js';
import { runOverTree } from '../helpers/source-tree.js';

/**
 * `npm run lint` runs dependency-cruiser with .dependency-cruiser.cjs over src/. These tests
 * run the same binary and config over small source trees, to prove the rules can fail: an
 * import cycle (through `import type` too) and an import that points up a layer.
 */
function cruise(files: Record<string, string>): Promise<{ status: number | null; output: string }> {
  const tsconfig = {
    compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true },
    include: ['src/**/*.ts'],
  };
  return runOverTree(
    'embers-import-rules-',
    { 'tsconfig.json': JSON.stringify(tsconfig), ...files },
    repoPath('node_modules', '.bin', 'depcruise'),
    ['src', '--config', repoPath('.dependency-cruiser.cjs'), '--output-type', 'err'],
  );
}

const clean = {
  'src/errors.ts': 'export class EmbersError extends Error {}\n',
  'src/util/fs.ts': "import { EmbersError } from '../errors.js';\nexport const fail = () => new EmbersError();\n",
  'src/vmm/driver.ts': "import { fail } from '../util/fs.js';\nexport const boot = () => fail();\n",
  'src/node/node.ts': "import { boot } from '../vmm/driver.js';\nexport const run = () => boot();\n",
  'src/cli/main.ts': "import { run } from '../node/node.js';\nrun();\n",
};

test('import rules: a tree whose imports point down and never cycle passes', async () => {
  const r = await cruise(clean);
  assert.equal(r.status, 0, r.output);
});

test('import rules: a cycle fails lint, also when one side imports only a type', async () => {
  const r = await cruise({
    ...clean,
    'src/node/node.ts':
      "import { boot } from '../vmm/driver.js';\nimport { SnapshotService } from './snapshots.js';\nexport class EmbersNode { s = new SnapshotService(); run = () => boot(); }\n",
    'src/node/snapshots.ts':
      "import type { EmbersNode } from './node.js';\nexport class SnapshotService { node?: EmbersNode; }\n",
  });
  assert.notEqual(r.status, 0, r.output);
  assert.match(r.output, /no-circular: src\/node\/(node|snapshots)\.ts/);
});

test('import rules: an import that points up a layer fails lint', async () => {
  const r = await cruise({
    ...clean,
    'src/vmm/driver.ts':
      "import type { run } from '../node/node.js';\nexport const boot = (): typeof run | undefined => undefined;\n",
    'src/node/node.ts': 'export const run = () => 1;\n',
  });
  assert.notEqual(r.status, 0, r.output);
  assert.match(r.output, /layers-vmm: src\/vmm\/driver\.ts → src\/node\/node\.ts/);
  assert.doesNotMatch(r.output, /no-circular/);
});
