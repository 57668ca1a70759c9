import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ERRORS, EmbersError, errorMessage, type ErrorCode } from '../../src/errors.js';
import { repoPath } from '../helpers/repo.js';

/** The rows of the README's table of error codes: code, exit status, summary. */
async function readmeErrorTable(): Promise<{ code: string; exit: number; summary: string }[]> {
  const readme = await readFile(repoPath('README.md'), 'utf8');
  const section = readme.split(/^## Error codes$/m)[1]?.split(/^## /m)[0];
  assert.ok(section, 'the README has an "## Error codes" section');
  return [...section.matchAll(/^\| `(EMB_[A-Z0-9_]+)` \| (\d+) \| (.*) \|$/gm)].map((m) => ({
    code: m[1],
    exit: Number(m[2]),
    summary: m[3].replace(/\\\|/g, '|'),
  }));
}

test('error catalogue: every code is in the README table, with its exit status and summary, and the table names no other code', async () => {
  const rows = await readmeErrorTable();
  const codes = Object.keys(ERRORS) as ErrorCode[];
  const documented = new Set(rows.map((r) => r.code));
  assert.deepEqual(
    codes.filter((c) => !documented.has(c)),
    [],
    'codes missing from the README table',
  );
  assert.deepEqual(
    rows.filter((r) => !Object.hasOwn(ERRORS, r.code)).map((r) => r.code),
    [],
    'stale codes in the README table',
  );
  assert.equal(rows.length, codes.length, 'each code once');
  for (const r of rows) {
    const spec = ERRORS[r.code as ErrorCode];
    assert.equal(r.exit, spec.exit, `${r.code}: exit status`);
    assert.equal(r.summary, spec.summary, `${r.code}: summary`);
  }
});

test('error catalogue: a code with a template makes its standard message from typed details; others fall back to the summary', () => {
  const e = EmbersError.of('EMB_SNAPSHOT_BUSY', { id: 'snap-1', pids: [12, 34] });
  assert.equal(e.message, 'snapshot snap-1 is being restored by another process (pid 12, 34)');
  assert.deepEqual(e.details, { id: 'snap-1', pids: [12, 34] });
  assert.equal(e.hint, ERRORS.EMB_SNAPSHOT_BUSY.hint);
  assert.equal(EmbersError.of('EMB_INSTANCE_NOT_FOUND', { name: 'fn-1' }).message, 'no instance named fn-1');
  assert.equal(errorMessage('EMB_NOT_ROOT', {}), ERRORS.EMB_NOT_ROOT.summary);
});

test('error catalogue: each template says what failed from the details alone', () => {
  const cases: [EmbersError, string][] = [
    [EmbersError.of('EMB_HOST_TOOL_MISSING', { cmd: 'mkfs.ext4' }), 'host program not found: mkfs.ext4'],
    [
      EmbersError.of('EMB_HOST_TOOL_MISSING', { program: 'zstd', debianPackage: 'zstd' }),
      'zstd is not installed (Debian package zstd)',
    ],
    [
      EmbersError.of('EMB_HOST_TOOL_MISSING', { header: '/usr/include/elf.h', debianPackage: 'libc6-dev' }),
      '/usr/include/elf.h is missing (Debian package libc6-dev)',
    ],
    [
      EmbersError.of('EMB_INSTANCE_BUSY', { name: 'fn-1', pid: 42, lock: '/x/snapshotting' }),
      'instance fn-1 is being snapshotted by another process (pid 42)',
    ],
    [
      EmbersError.of('EMB_REMOTE_NOT_FOUND', { id: 'snap-1', endpoint: 'http://10.0.0.2:8080' }),
      'the peer http://10.0.0.2:8080 has no snapshot snap-1',
    ],
    [
      EmbersError.of('EMB_REMOTE_NOT_FOUND', { bucket: 'b', endpoint: 'http://s3:9000' }),
      'the bucket b does not exist at http://s3:9000',
    ],
    [
      EmbersError.of('EMB_REMOTE_NOT_FOUND', { id: 'snap-1', bucket: 'b', endpoint: 'http://s3:9000' }),
      'no snapshot snap-1 in the bucket b (http://s3:9000)',
    ],
    [
      EmbersError.of('EMB_FUNCTION_TIMEOUT', { function: 'hello', requestTimeoutSeconds: 30 }),
      'function hello: no instance was free within 30 s',
    ],
    [
      EmbersError.of('EMB_FUNCTION_DRAINING', { function: 'hello' }),
      'function hello takes no new requests: it is being removed or the node is shutting down',
    ],
    [EmbersError.of('EMB_FUNCTION_DRAINING', {}), 'the node is shutting down'],
  ];
  for (const [err, message] of cases) {
    assert.equal(err.message, message, err.code);
    assert.equal(err.hint, ERRORS[err.code].hint, `${err.code}: the catalogue's hint`);
  }
});

/**
 * The details are checked by the compiler: tsc over a copy of the catalogue and files of call
 * sites. Call sites that follow each code's shape pass; each way of breaking it fails.
 */
async function compile(files: Record<string, string>): Promise<{ status: number | null; output: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'embers-error-types-'));
  try {
    await mkdir(join(dir, 'src', 'error-catalogue'), { recursive: true });
    for (const f of ['errors.ts', 'error-details.ts']) await copyFile(repoPath('src', f), join(dir, 'src', f));
    for (const f of await readdir(repoPath('src', 'error-catalogue'))) {
      await copyFile(repoPath('src', 'error-catalogue', f), join(dir, 'src', 'error-catalogue', f));
    }
    for (const [name, source] of Object.entries(files)) await writeFile(join(dir, 'src', `${name}.ts`), source);
    const compilerOptions = {
      target: 'ES2022',
      module: 'NodeNext',
      moduleResolution: 'NodeNext',
      strict: true,
      noEmit: true,
      types: [],
    };
    await writeFile(join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions, include: ['src/**/*.ts'] }));
    const r = spawnSync(process.execPath, [repoPath('node_modules', 'typescript', 'bin', 'tsc'), '-p', dir], {
      encoding: 'utf8',
    });
    return { status: r.status, output: `${r.stdout}${r.stderr}` };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const GOOD = `import { EmbersError, isEmbersError } from './errors.js';
export const a = new EmbersError('EMB_REGISTRY_UNREACHABLE', 'x', { url: 'http://r', transient: false });
export const b = EmbersError.of('EMB_SNAPSHOT_NOT_FOUND', { id: 'snap-1' });
export function transient(err: unknown): boolean {
  return isEmbersError(err, 'EMB_REGISTRY_UNREACHABLE') && err.details.transient !== false;
}
`;

test("error details: call sites that follow each code's shape compile", async () => {
  const r = await compile({ good: GOOD });
  assert.equal(r.status, 0, r.output);
});

test('error details: a field the code does not have, a wrong type, a missing template field or a mutation fail to compile', async () => {
  const cases = {
    'unknown-field': `import { EmbersError } from './errors.js';\nexport const e = new EmbersError('EMB_SNAPSHOT_NOT_FOUND', 'x', { id: 's', transient: true });\n`,
    'wrong-type': `import { EmbersError } from './errors.js';\nexport const e = new EmbersError('EMB_REGISTRY_UNREACHABLE', 'x', { transient: 'no' });\n`,
    'missing-field': `import { EmbersError } from './errors.js';\nexport const e = EmbersError.of('EMB_INSTANCE_NOT_FOUND', {});\n`,
    mutation: `import { isEmbersError } from './errors.js';\nexport function f(err: unknown) { if (isEmbersError(err, 'EMB_VMM_START_FAILED')) err.details.tail = 'x'; }\n`,
    'read-of-another-code': `import { isEmbersError } from './errors.js';\nexport function f(err: unknown) { return isEmbersError(err, 'EMB_SNAPSHOT_NOT_FOUND') ? err.details.faultMessage.length : 0; }\n`,
  };
  const r = await compile({ good: GOOD, ...cases });
  assert.notEqual(r.status, 0, r.output);
  assert.doesNotMatch(r.output, /src\/good\.ts/, 'the good file still compiles');
  for (const name of Object.keys(cases))
    assert.match(r.output, new RegExp(`src/${name}\\.ts\\(\\d+,\\d+\\): error TS`), `${name} fails`);
});
