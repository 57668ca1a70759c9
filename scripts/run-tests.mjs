// Runs the compiled test tiers with node's test runner, one file at a time (the e2e tier
// boots real guests on a 2-core machine). Usage: node scripts/run-tests.mjs [unit|integration|e2e]...
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

const tiers = process.argv.slice(2).length ? process.argv.slice(2) : ['unit', 'integration', 'e2e'];
const dirs = tiers.map((t) => `dist/test/${t}`).filter((d) => existsSync(d));
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', '--test-reporter=spec', ...dirs], { stdio: 'inherit' });
process.exit(r.status ?? 1);
