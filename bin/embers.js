#!/usr/bin/env node
// The embers command. Runs the compiled CLI (npm install builds it via `prepare`).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// The AWS SDK warns on every run that its future releases need Node 22; embers pins a release that supports Node 20.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const main = new URL('../dist/src/cli/main.js', import.meta.url);
if (!existsSync(fileURLToPath(main))) {
  console.error('embers is not built yet: run `npm install` (or `npm run build`) in the checkout first.');
  process.exit(70);
}
await import(main.href);
