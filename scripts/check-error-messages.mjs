#!/usr/bin/env node
// Fails when a file of src/ other than the catalogue's module (src/errors.ts) writes an error's
// message itself, with `new EmbersError(code, message, …)`: messages come from the catalogue's
// templates (`EmbersError.of(code, details)`), and an error seen from further out keeps its
// message (`err.within(…)`). Run by `npm run lint` from the repository root;
// test/unit/error-messages-lint.test.ts runs it over small trees that break it.
//
// Usage: node scripts/check-error-messages.mjs [DIR]   (DIR defaults to src; run from its parent)
import { join } from 'node:path';
import ts from 'typescript';
import { parse, tsFiles } from './source-files.mjs';

const root = process.argv[2] ?? 'src';
/** The catalogue's module: the one file that constructs EmbersErrors from a message. */
const ALLOWED = new Set([join(root, 'errors.ts')]);

function constructionsIn(file) {
  const { source, at } = parse(file);
  const found = [];
  const visit = (node) => {
    if (ts.isNewExpression(node) && ts.isIdentifier(node.expression) && node.expression.text === 'EmbersError') {
      found.push(at(node, node.getText().split('\n')[0]));
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

const found = [];
for (const file of tsFiles(root)) if (!ALLOWED.has(file)) found.push(...constructionsIn(file));
if (found.length > 0) {
  console.error(
    'check-error-messages: messages come from the catalogue (src/error-catalogue/): ' +
      'use EmbersError.of(code, details), or err.within(…) to add context to an error:',
  );
  for (const f of found) console.error(`  ${f}`);
  process.exit(1);
}
console.log(`check-error-messages: no file of ${root} but ${[...ALLOWED].join(', ')} writes an error's message`);
