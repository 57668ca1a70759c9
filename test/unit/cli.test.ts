import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { COMMANDS, commandHelp, hoistGlobalOptions, type CommandSpec } from '../../src/cli/commands.js';
import { GLOBAL_OPTIONS } from '../../src/cli/args.js';
import { validateFunctionSpec, type FunctionSpec } from '../../src/node/function-spec.js';
import { isEmbersError } from '../../src/errors.js';
import { repoPath } from '../helpers/repo.js';

const BIN = repoPath('bin', 'embers.js');

/** Runs the embers CLI; returns its exit code, stdout, stderr and the last JSON line (with --json). */
function embers(args: string[]): { status: number | null; stdout: string; stderr: string; json?: Record<string, any> } {
  const r = spawnSync(process.execPath, [BIN, ...args], {
    encoding: 'utf8',
    env: { ...process.env, EMBERS_S3_ENDPOINT: '', EMBERS_S3_BUCKET: '' },
  });
  const last = r.stdout.trim().split('\n').at(-1) ?? '';
  let json: Record<string, any> | undefined;
  try {
    json = JSON.parse(last) as Record<string, any>;
  } catch {
    json = undefined;
  }
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, json };
}

// ---- error hints name only flags and commands that exist ----

const COMMAND_SPECS: Record<string, CommandSpec> = COMMANDS;
const FLAGS = new Set([
  ...Object.keys(GLOBAL_OPTIONS),
  ...Object.values(COMMAND_SPECS).flatMap((c) => Object.keys(c.options)),
]);

/** What a hint names that the CLI does not have: unknown --flags, and `embers CMD [SUB]` that is no command. */
function unknownNames(hint: string): string[] {
  const problems: string[] = [];
  // a quoted command of another program (`firecracker --snapshot-version`) names that program's flags
  const ours = hint.replace(/\\?`(?!embers )[a-z][\w.-]* [^`]*\\?`/g, '');
  for (const m of ours.matchAll(/(?<![\w-])--([a-z][a-z0-9-]*)/g)) if (!FLAGS.has(m[1])) problems.push(`--${m[1]}`);
  for (const m of hint.matchAll(/`embers ([a-z][a-z0-9-]*)(?: ([a-z][a-z0-9-]*))?/g)) {
    const [, command, sub] = m;
    const spec = COMMAND_SPECS[command];
    if (!spec || !Object.hasOwn(COMMAND_SPECS, command)) problems.push(`embers ${command}`);
    else if (spec.subcommands && sub !== undefined && !Object.hasOwn(spec.subcommands, sub))
      problems.push(`embers ${command} ${sub}`);
  }
  return problems;
}

/** Every `hint: '…'` or `hint: \`…\`` literal in src/ (the catalogue's and those given at a throw). */
async function hintsInSource(): Promise<{ file: string; hint: string }[]> {
  const out: { file: string; hint: string }[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const path = join(dir, e.name);
      if (e.isDirectory()) await walk(path);
      else if (e.name.endsWith('.ts')) {
        const text = await readFile(path, 'utf8');
        for (const m of text.matchAll(/\bhint:\s*(['`])((?:\\.|(?!\1)[^\\])*)\1/g))
          out.push({ file: path, hint: m[2] });
      }
    }
  };
  await walk(repoPath('src'));
  return out;
}

test('every flag and command an error hint names exists in the CLI', async () => {
  const hints = await hintsInSource();
  assert.ok(hints.length >= 40, `found only ${hints.length} hints: the scan is broken`);
  assert.ok(hints.some((h) => h.hint.includes('`embers guest build`')));
  const bad = hints.flatMap(({ file, hint }) =>
    unknownNames(hint).map((name) => `${file.replace(repoPath(), '')}: ${name} in "${hint}"`),
  );
  assert.deepEqual(bad, []);
});

test('the hint check catches what hints used to name', () => {
  assert.deepEqual(unknownNames('stop instances or raise --max-slots'), ['--max-slots']);
  assert.deepEqual(unknownNames('or pass --kernel with a vmlinux path'), ['--kernel']);
  assert.deepEqual(unknownNames('see `embers errors`'), ['embers errors']);
  assert.deepEqual(unknownNames('run `embers snapshot restorx ID`'), ['embers snapshot restorx']);
  assert.deepEqual(unknownNames('run `embers snapshot push ID` with --home and --from-peer'), []);
  assert.deepEqual(unknownNames('a Firecracker whose `firecracker --snapshot-version` matches'), []);
  assert.deepEqual(unknownNames('a Firecracker whose `--snapshot-version` matches'), ['--snapshot-version']);
});

// ---- global options before or after the command ----

test('global options before the command are moved after it', () => {
  assert.deepEqual(hoistGlobalOptions(['--home', '/h', '--json', 'run', 'img', '--memory', '128']), {
    command: 'run',
    args: ['img', '--memory', '128', '--home', '/h', '--json'],
  });
  assert.deepEqual(hoistGlobalOptions(['--vmm=qemu', 'ps']), { command: 'ps', args: ['--vmm=qemu'] });
  assert.deepEqual(hoistGlobalOptions(['ps', '--home', '/h']), { command: 'ps', args: ['--home', '/h'] });
  assert.deepEqual(hoistGlobalOptions(['--help']), { command: undefined, args: ['--help'] });
  // `--` ends embers' options: what follows is the guest command of `embers exec`, globals go before it
  assert.deepEqual(hoistGlobalOptions(['--home', '/h', 'exec', 'fn-1', '--', 'ls', '--home']), {
    command: 'exec',
    args: ['fn-1', '--home', '/h', '--', 'ls', '--home'],
  });
  assert.throws(
    () => hoistGlobalOptions(['--memory', '128', 'run']),
    (e) => isEmbersError(e, 'EMB_USAGE') && /--memory/.test(e.message),
  );
  assert.throws(
    () => hoistGlobalOptions(['--home']),
    (e) => isEmbersError(e, 'EMB_USAGE') && /needs a value/.test(e.message),
  );
});

test('`embers --home DIR --json CMD` parses as `embers CMD --home DIR --json`', async () => {
  const home = await mkdtemp(join(tmpdir(), 'embers-cli-'));
  try {
    // refused up front either way: the options were taken as global options, not as the command
    const before = embers(['--home', home, '--json', 'run', 'img', '--port', '99999']);
    const after = embers(['run', 'img', '--port', '99999', '--home', home, '--json']);
    assert.equal(before.status, 64);
    assert.equal(before.json?.error?.code, 'EMB_USAGE');
    assert.match(before.json?.error?.message, /--port must be an integer from 1 to 65535, not "99999"/);
    assert.deepEqual(before.json, after.json);
    const unknown = embers(['--hom', home, 'ps']);
    assert.equal(unknown.status, 64);
    assert.match(unknown.stderr, /unknown option --hom before the command/);
  } finally {
    await rm(home, { recursive: true, force: true });
  }
});

// ---- embers CMD --help ----

test('`embers CMD --help` explains that command', () => {
  for (const name of Object.keys(COMMANDS) as (keyof typeof COMMANDS)[]) {
    const text = commandHelp(name);
    assert.match(text, new RegExp(`^usage: embers ${name}`), name);
    for (const option of Object.keys(COMMANDS[name].options))
      assert.ok(text.includes(`--${option}`), `${name} --help lists --${option}`);
  }
  const run = embers(['run', '--help']);
  assert.equal(run.status, 0);
  assert.match(run.stdout, /^usage: embers run <image>/);
  assert.match(run.stdout, /--memory MIB\s+guest memory in MiB/);
  const snapshot = embers(['--home', '/nonexistent', 'snapshot', '--help']);
  assert.equal(snapshot.status, 0);
  assert.match(snapshot.stdout, /^usage: embers snapshot/);
  assert.match(snapshot.stdout, /restore\s+<id>: restore N clones/);
  assert.equal(embers(['help', 'image']).stdout, commandHelp('image'));
  assert.match(embers(['--help']).stdout, /^embers — serverless functions/);
});

// ---- bad input refused up front ----

const fn = (over: Partial<FunctionSpec>): FunctionSpec => ({
  image: 'img',
  vcpus: 1,
  memoryMiB: 256,
  port: 8080,
  env: [],
  ...over,
});
const host = { cpus: 2, memoryMiB: 4096 };

test('a function spec the host cannot run is refused with EMB_CONFIG_INVALID', () => {
  validateFunctionSpec(fn({ vcpus: 2, memoryMiB: 4096, port: 65535, env: ['A=1', '_b=', 'PATH=/x=y'] }), host);
  const refused = (over: Partial<FunctionSpec>, re: RegExp) =>
    assert.throws(
      () => validateFunctionSpec(fn(over), host),
      (e) => isEmbersError(e, 'EMB_CONFIG_INVALID') && re.test(e.message),
      JSON.stringify(over),
    );
  refused({ vcpus: 3 }, /vcpus 3 .* this host has 2 CPU/);
  refused({ vcpus: 0 }, /vcpus 0/);
  refused({ memoryMiB: 4097 }, /memory 4097 MiB .* this host has 4096 MiB/);
  refused({ memoryMiB: 32 }, /at least 64 MiB/);
  refused({ port: 0 }, /port 0 is not a TCP port/);
  refused({ port: 65536 }, /port 65536/);
  refused({ env: ['NOVALUE'] }, /env entry "NOVALUE" is not NAME=value/);
  refused({ env: ['=x'] }, /env entry "=x"/);
  refused({ env: ['1A=x'] }, /env entry "1A=x"/);
  refused({ env: ['A B=x'] }, /env entry "A B=x"/);
});

test('the CLI refuses impossible resources before the node takes anything', async () => {
  const home = join(await mkdtemp(join(tmpdir(), 'embers-cli-')), 'home');
  try {
    const cases: [string[], string, RegExp][] = [
      [['--memory', '99999999'], 'EMB_CONFIG_INVALID', /memory 99999999 MiB is not possible here/],
      [['--vcpus', '500'], 'EMB_CONFIG_INVALID', /vcpus 500 is not possible here/],
      [['--port', '99999'], 'EMB_USAGE', /--port must be an integer from 1 to 65535/],
      [['--port', '80x'], 'EMB_USAGE', /--port must be an integer/],
      [['--env', 'NOVALUE'], 'EMB_CONFIG_INVALID', /env entry "NOVALUE" is not NAME=value/],
      [['--name', 'Bad Name'], 'EMB_CONFIG_INVALID', /instance name "Bad Name" is invalid/],
      [['--net-pool-size', '99999'], 'EMB_USAGE', /--net-pool-size must be an integer from 0 to 16384/],
    ];
    for (const [flags, code, message] of cases) {
      const r = embers(['--home', home, 'run', 'no-such-image', ...flags, '--json']);
      assert.equal(r.status, 64, flags.join(' '));
      assert.equal(r.json?.error?.code, code, flags.join(' '));
      assert.match(r.json?.error?.message, message);
      assert.ok(r.json?.error?.hint, 'the error says what to do');
    }
    assert.equal(existsSync(home), false, 'the home was never created: nothing was taken');
  } finally {
    await rm(join(home, '..'), { recursive: true, force: true });
  }
});

test('restore --count beyond the address range is refused before the snapshot is looked for', async (t) => {
  if (process.getuid?.() !== 0) return t.skip('opening a node needs root');
  const home = await mkdtemp(join(tmpdir(), 'embers-cli-'));
  try {
    const r = embers([
      'snapshot',
      'restore',
      'snap-0123456789abcdef',
      '--count',
      '99999',
      '--home',
      home,
      '--snapshots',
      'local',
      '--json',
    ]);
    assert.equal(r.status, 64, r.stderr);
    assert.equal(r.json?.error?.code, 'EMB_CONFIG_INVALID');
    assert.match(
      r.json?.error?.message,
      /99999 instances cannot start at once: this node has network slots \(clone IPs\) for 16384 more/,
    );
    const fits = embers([
      'snapshot',
      'restore',
      'snap-0123456789abcdef',
      '--count',
      '2',
      '--home',
      home,
      '--snapshots',
      'local',
      '--json',
    ]);
    assert.equal(
      fits.json?.error?.code,
      'EMB_SNAPSHOT_NOT_FOUND',
      'a count that fits goes on to look for the snapshot',
    );
  } finally {
    await rm(home, { recursive: true, force: true });
  }
});

test('demo --clones beyond the address range is refused before anything boots', async (t) => {
  if (process.getuid?.() !== 0) return t.skip('opening a node needs root');
  const home = await mkdtemp(join(tmpdir(), 'embers-cli-'));
  try {
    const r = embers(['demo', '--clones', '99999', '--home', home, '--json']);
    assert.equal(r.status, 64, r.stderr);
    assert.equal(r.json?.error?.code, 'EMB_CONFIG_INVALID');
    assert.match(r.json?.error?.message, /demo --clones 99999 needs 100000 network slots .* this node has 16384 free/);
    assert.match(r.json?.error?.hint, /--clones 16383 or less/);
    assert.deepEqual(await readdir(join(home, 'instances')), [], 'nothing was started');
  } finally {
    await rm(home, { recursive: true, force: true });
  }
});
