import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile, readdir, writeFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CRASH_POINTS } from '../../src/util/crash-point.js';
import { repoPath } from '../helpers/repo.js';

async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await sources(p)));
    else if (e.name.endsWith('.ts')) out.push(p);
  }
  return out;
}

test('crash points: every point in the table is reached from src/, and src/ reaches no point outside it', async () => {
  const reached = new Map<string, string[]>();
  for (const file of await sources(repoPath('src'))) {
    if (file.endsWith(join('util', 'crash-point.ts'))) continue;
    for (const m of (await readFile(file, 'utf8')).matchAll(/crashPoint\('([^']+)'\)/g)) {
      reached.set(m[1]!, [...(reached.get(m[1]!) ?? []), file]);
    }
  }
  const listed = Object.keys(CRASH_POINTS).sort();
  assert.deepEqual([...reached.keys()].sort(), listed);
  for (const [name, what] of Object.entries(CRASH_POINTS)) {
    assert.match(name, /^[a-z]+(\.[a-z-]+)+$/, name);
    assert.ok(what.length > 10, `${name} says what has happened when it is reached`);
  }
});

/** Runs a child that passes `point` twice (printing after each), with `env`. */
function child(
  env: Record<string, string>,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string }> {
  const script = `
    const { crashPoint } = await import(${JSON.stringify(repoPath('dist/src/util/crash-point.js'))});
    await crashPoint('snapshot.create.after-pause'); console.log('passed 1');
    await crashPoint('snapshot.create.after-pause'); console.log('passed 2');`;
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, ['--input-type=module', '-e', script], {
      env: { PATH: process.env.PATH ?? '', ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let stdout = '';
    c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    c.on('error', reject);
    c.on('close', (code, signal) => resolve({ code, signal, stdout }));
  });
}

test('crashPoint: a no-op unless named; EMBERS_CRASH_AT kills the process with SIGKILL at the n-th passage', async () => {
  assert.deepEqual(await child({}), { code: 0, signal: null, stdout: 'passed 1\npassed 2\n' });
  assert.deepEqual(await child({ EMBERS_CRASH_AT: 'snapshot.create.after-resume' }), {
    code: 0,
    signal: null,
    stdout: 'passed 1\npassed 2\n',
  });
  assert.deepEqual(await child({ EMBERS_CRASH_AT: 'snapshot.create.after-pause' }), {
    code: null,
    signal: 'SIGKILL',
    stdout: '',
  });
  assert.deepEqual(await child({ EMBERS_CRASH_AT: 'snapshot.create.after-pause@2' }), {
    code: null,
    signal: 'SIGKILL',
    stdout: 'passed 1\n',
  });
});

test('crashPoint: EMBERS_PAUSE_AT stops at the point, says so in <file>.reached, and goes on once <file> exists', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'embers-pause-'));
  try {
    const file = join(dir, 'go');
    const running = child({ EMBERS_PAUSE_AT: 'snapshot.create.after-pause', EMBERS_PAUSE_FILE: file });
    let reached: string | undefined;
    while (!reached) reached = await readFile(`${file}.reached`, 'utf8').catch(() => undefined);
    assert.match(reached, /^\d+\n$/);
    await writeFile(file, '');
    assert.deepEqual(await running, { code: 0, signal: null, stdout: 'passed 1\npassed 2\n' });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
