// What the source checks of `npm run lint` (check-env-reads.mjs, check-error-messages.mjs) share.
import { readdirSync, readFileSync } from 'node:fs';
import { join, sep } from 'node:path';
import ts from 'typescript';

/** Every .ts file below `dir`. */
export function* tsFiles(dir) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) yield* tsFiles(path);
    else if (entry.name.endsWith('.ts')) yield path;
  }
}

/** The file parsed, and `at(node, what)`, which says "path:line: what" for a finding. */
export function parse(file) {
  const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const at = (node, what) =>
    `${file.split(sep).join('/')}:${source.getLineAndCharacterOfPosition(node.getStart()).line + 1}: ${what}`;
  return { source, at };
}
