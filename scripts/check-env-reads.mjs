#!/usr/bin/env node
// Fails when a file of src/ other than the configuration module (src/config.ts) reads the
// environment: `process.env`, `process['env']`, `globalThis.process.env`, a destructured
// `{ env } = process`, or `env` imported from 'process' / 'node:process'. Run by `npm run lint`
// from the repository root; test/unit/env-reads.test.ts runs it over small trees that break it.
//
// Usage: node scripts/check-env-reads.mjs [DIR]   (DIR defaults to src; run from its parent)
import { join, relative } from 'node:path';
import ts from 'typescript';
import { parse, tsFiles } from './source-files.mjs';

const root = process.argv[2] ?? 'src';
/** The configuration module: the one file allowed to read the environment. */
const ALLOWED = new Set([join(root, 'config.ts')]);

/** True for `process`, `globalThis.process` and `global.process`. */
function isProcess(node) {
  if (ts.isIdentifier(node)) return node.text === 'process';
  return (
    ts.isPropertyAccessExpression(node) &&
    node.name.text === 'process' &&
    ts.isIdentifier(node.expression) &&
    ['globalThis', 'global'].includes(node.expression.text)
  );
}

function readsOf(file) {
  const { source, at: where } = parse(file);
  const found = [];
  const at = (node, what) => found.push(where(node, what));
  const visit = (node) => {
    if (ts.isPropertyAccessExpression(node) && node.name.text === 'env' && isProcess(node.expression))
      at(node, node.getText());
    else if (
      ts.isElementAccessExpression(node) &&
      isProcess(node.expression) &&
      ts.isStringLiteralLike(node.argumentExpression) &&
      node.argumentExpression.text === 'env'
    )
      at(node, node.getText());
    else if (
      ts.isVariableDeclaration(node) &&
      node.initializer &&
      isProcess(node.initializer) &&
      ts.isObjectBindingPattern(node.name)
    ) {
      if (node.name.elements.some((e) => (e.propertyName ?? e.name).getText() === 'env'))
        at(node, `${node.getText()} (destructures env)`);
    } else if (
      ts.isImportDeclaration(node) &&
      ts.isStringLiteral(node.moduleSpecifier) &&
      ['process', 'node:process'].includes(node.moduleSpecifier.text)
    ) {
      const bindings = node.importClause?.namedBindings;
      const named =
        bindings && ts.isNamedImports(bindings) ? bindings.elements.map((e) => (e.propertyName ?? e.name).text) : [];
      // a default or namespace import gives the whole process object, env included
      if (named.includes('env') || node.importClause?.name || (bindings && ts.isNamespaceImport(bindings)))
        at(node, node.getText());
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

const found = [];
for (const file of tsFiles(root)) if (!ALLOWED.has(file)) found.push(...readsOf(file));
if (found.length > 0) {
  console.error(
    `check-env-reads: only ${[...ALLOWED].join(', ')} may read the environment; read it through its \`environment()\`:`,
  );
  for (const f of found) console.error(`  ${f}`);
  process.exit(1);
}
console.log(
  `check-env-reads: no file of ${relative('.', root) || '.'} but ${[...ALLOWED].join(', ')} reads the environment`,
);
