// Fails when an EmbersError is built from an untyped details bag. `new EmbersError(code, msg, details)`
// and `EmbersError.of(code, details)` are typed by their code (src/error-details.ts), but TypeScript
// accepts a Record<string, unknown> where an object of optional fields is expected; this check refuses
// details whose type has an index signature or is any/unknown, so every key stays declared.
// Usage: node scripts/check-error-details.mjs   (run by `npm run lint`)
import ts from 'typescript';

const cfg = ts.getParsedCommandLineOfConfigFile(
  'tsconfig.json',
  {},
  { ...ts.sys, onUnRecoverableConfigFileDiagnostic() {} },
);
const program = ts.createProgram(cfg.fileNames, cfg.options);
const checker = program.getTypeChecker();
let constructions = 0;
const untyped = [];
for (const sf of program.getSourceFiles()) {
  if (!sf.fileName.includes('/src/')) continue;
  const visit = (node) => {
    let arg;
    if (ts.isNewExpression(node) && node.expression.getText(sf) === 'EmbersError') arg = node.arguments?.[2];
    if (ts.isCallExpression(node) && node.expression.getText(sf) === 'EmbersError.of') arg = node.arguments[1];
    if (arg) {
      constructions++;
      const t = checker.getTypeAtLocation(arg);
      for (const u of t.isUnion() ? t.types : [t]) {
        if (checker.getIndexInfosOfType(u).length > 0 || u.flags & (ts.TypeFlags.Any | ts.TypeFlags.Unknown)) {
          const { line } = sf.getLineAndCharacterOfPosition(arg.getStart(sf));
          untyped.push(`${sf.fileName}:${line + 1}: details of type ${checker.typeToString(u).slice(0, 80)}`);
        }
      }
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
}
if (untyped.length > 0) {
  console.error(
    `check-error-details: ${untyped.length} EmbersError(s) built from untyped details:\n${untyped.join('\n')}`,
  );
  console.error('declare the keys for the code in src/error-details.ts and pass a typed object');
  process.exit(1);
}
console.log(`check-error-details: ${constructions} error constructions in src, all with typed details`);
