// Runs the compiled test tiers with node's test runner, one file at a time (the e2e tier
// boots real guests on a 2-core machine), and ends with one plain summary line.
// Usage: node scripts/run-tests.mjs [unit|integration|e2e]...
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const tiers = process.argv.slice(2).length ? process.argv.slice(2) : ['unit', 'integration', 'e2e'];
const dirs = tiers.map((t) => `dist/test/${t}`).filter((d) => existsSync(d));
const tmp = mkdtempSync(join(tmpdir(), 'embers-tap-'));
const tap = join(tmp, 'report.tap');
const r = spawnSync(
  process.execPath,
  [
    '--test',
    '--test-concurrency=1',
    '--test-reporter=spec',
    '--test-reporter-destination=stdout',
    '--test-reporter=tap',
    `--test-reporter-destination=${tap}`,
    ...dirs,
  ],
  { stdio: 'inherit' },
);
const report = existsSync(tap) ? readFileSync(tap, 'utf8') : '';
rmSync(tmp, { recursive: true, force: true });
const count = (name) => Number(new RegExp(`^# ${name} (\\d+)$`, 'm').exec(report)?.[1] ?? 0);
console.log(
  `tests (${tiers.join(', ')}): ${count('pass')} passed, ${count('fail') + count('cancelled')} failed, ${count('skipped')} skipped`,
);
process.exit(r.status ?? 1);
