#!/usr/bin/env node
// Generates src/vmm/firecracker/api-types.ts from the vendored Firecracker Swagger 2.0 spec
// (src/vmm/firecracker/firecracker-api.yaml): one TypeScript type per definition, and one
// entry per operation (method + path) with its path parameters, body and response types.
//
//   npm run gen:firecracker            writes api-types.ts
//   npm run gen:firecracker -- --check exits 1 if api-types.ts differs from what it would write
//
// `generateFirecrackerTypes(specText)` is exported for the drift test
// (test/unit/firecracker-types.test.ts), which runs it and compares.
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parse } from 'yaml';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const SPEC_PATH = join(ROOT, 'src/vmm/firecracker/firecracker-api.yaml');
export const OUTPUT_PATH = join(ROOT, 'src/vmm/firecracker/api-types.ts');
const METHODS = ['get', 'put', 'patch', 'post', 'delete'];
const IDENT = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

/** The TypeScript source for the spec text `specText` (a Swagger 2.0 YAML document). */
export function generateFirecrackerTypes(specText) {
  const spec = parse(specText);
  if (spec?.swagger !== '2.0') throw new Error('not a Swagger 2.0 document');
  const out = [];
  out.push(
    '// GENERATED FILE: do not edit. Regenerate with `npm run gen:firecracker`.',
    `// Source: src/vmm/firecracker/firecracker-api.yaml, ${spec.info.title} ${spec.info.version} (Swagger ${spec.swagger}).`,
    '// test/unit/firecracker-types.test.ts fails when this file drifts from the spec.',
    '/* eslint-disable */',
    '',
    '/** The API version of the spec these types were generated from. */',
    `export const FIRECRACKER_API_VERSION = ${JSON.stringify(String(spec.info.version))};`,
    '',
  );

  for (const [name, schema] of Object.entries(spec.definitions ?? {})) {
    out.push(...docBlock(schema, ''));
    if (schema.type === 'object' || schema.properties) {
      if (!schema.properties && schema.additionalProperties) out.push(`export type ${name} = ${typeOf(schema, '')};`);
      else out.push(`export interface ${name} ${objectBody(schema, '')}`);
    } else {
      out.push(`export type ${name} = ${typeOf(schema, '')};`);
    }
    out.push('');
  }

  const ops = [];
  for (const [path, item] of Object.entries(spec.paths ?? {})) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      const params = op.parameters ?? [];
      const pathParams = params.filter((p) => p.in === 'path');
      const bodyParam = params.find((p) => p.in === 'body');
      const ok = op.responses?.['200'] ?? op.responses?.[200];
      ops.push({
        key: `${method.toUpperCase()} ${path}`,
        method: method.toUpperCase(),
        path,
        operationId: op.operationId,
        summary: op.summary,
        pathParams,
        body: bodyParam ? (bodyParam.required ? 'required' : 'optional') : 'none',
        bodyType: bodyParam ? typeOf(bodyParam.schema, '    ') : 'undefined',
        responseType: ok?.schema ? typeOf(ok.schema, '    ') : 'void',
      });
    }
  }

  out.push(
    '/** Every operation of the API, keyed by "METHOD /path/{param}". */',
    'export interface FirecrackerOperations {',
  );
  for (const op of ops) {
    if (op.summary) out.push(`  /** ${oneLine(op.summary)} (${op.operationId}) */`);
    const params = op.pathParams.length
      ? `{ ${op.pathParams.map((p) => `${p.name}: ${typeOf(p, '')}`).join('; ')} }`
      : 'Record<string, never>';
    const body = op.body === 'optional' ? `${op.bodyType} | undefined` : op.bodyType;
    out.push(`  ${JSON.stringify(op.key)}: {`);
    out.push(`    operationId: ${JSON.stringify(op.operationId)};`);
    out.push(`    params: ${params};`);
    out.push(`    body: ${body};`);
    out.push(`    response: ${op.responseType};`);
    out.push('  };');
  }
  out.push('}', '');
  out.push('export type FirecrackerOperationKey = keyof FirecrackerOperations;', '');
  out.push(
    '/** What the client needs at run time to build each request. */',
    'export interface FirecrackerOperationInfo {',
  );
  out.push(
    "  method: 'GET' | 'PUT' | 'PATCH' | 'POST' | 'DELETE';",
    '  path: string;',
    '  operationId: string;',
    '  pathParams: readonly string[];',
  );
  out.push(
    "  /** Whether the operation takes a JSON body: 'required', 'optional' or 'none'. */",
    "  body: 'required' | 'optional' | 'none';",
    '}',
    '',
  );
  out.push(
    'export const FIRECRACKER_OPERATIONS: { readonly [K in FirecrackerOperationKey]: FirecrackerOperationInfo } = {',
  );
  for (const op of ops) {
    out.push(
      `  ${JSON.stringify(op.key)}: { method: ${JSON.stringify(op.method)}, path: ${JSON.stringify(op.path)}, operationId: ${JSON.stringify(op.operationId)}, pathParams: [${op.pathParams
        .map((p) => JSON.stringify(p.name))
        .join(', ')}], body: ${JSON.stringify(op.body)} },`,
    );
  }
  out.push('};', '');
  return out.join('\n');
}

function oneLine(text) {
  return String(text).replace(/\s+/g, ' ').replace(/\*\//g, '* /').trim();
}

function docBlock(schema, indent) {
  const lines = [];
  if (schema.description) lines.push(oneLine(schema.description));
  if (schema.minimum !== undefined) lines.push(`@minimum ${schema.minimum}`);
  if (schema.maximum !== undefined) lines.push(`@maximum ${schema.maximum}`);
  if (schema.format !== undefined && ['int32', 'int64'].includes(schema.format)) lines.push(`@format ${schema.format}`);
  if (schema.default !== undefined) lines.push(`@default ${JSON.stringify(schema.default)}`);
  if (schema.readOnly) lines.push('@readonly');
  if (lines.length === 0) return [];
  if (lines.length === 1) return [`${indent}/** ${lines[0]} */`];
  return [`${indent}/**`, ...lines.map((l) => `${indent} * ${l}`), `${indent} */`];
}

function refName(ref) {
  const m = /^#\/definitions\/(.+)$/.exec(ref);
  if (!m) throw new Error(`unsupported $ref ${ref}`);
  return m[1];
}

function objectBody(schema, indent) {
  const required = new Set(schema.required ?? []);
  const lines = ['{'];
  for (const [prop, sub] of Object.entries(schema.properties ?? {})) {
    lines.push(...docBlock(sub, `${indent}  `));
    const key = IDENT.test(prop) ? prop : JSON.stringify(prop);
    lines.push(`${indent}  ${key}${required.has(prop) ? '' : '?'}: ${typeOf(sub, `${indent}  `)};`);
  }
  if (schema.additionalProperties) {
    const extra = schema.additionalProperties === true ? 'unknown' : typeOf(schema.additionalProperties, `${indent}  `);
    lines.push(`${indent}  [key: string]: ${extra};`);
  }
  lines.push(`${indent}}`);
  return lines.join('\n');
}

function typeOf(schema, indent) {
  if (!schema) return 'unknown';
  if (schema.$ref) return refName(schema.$ref);
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(' | ');
  switch (schema.type) {
    case 'string':
      return 'string';
    case 'integer':
    case 'number':
      return 'number';
    case 'boolean':
      return 'boolean';
    case 'array': {
      const item = typeOf(schema.items, indent);
      return /^[A-Za-z0-9_]+$/.test(item) ? `${item}[]` : `Array<${item}>`;
    }
    case 'object':
    case undefined:
      if (schema.properties) return objectBody(schema, indent);
      if (schema.additionalProperties === true || schema.type === 'object') return 'Record<string, unknown>';
      return 'unknown';
    default:
      throw new Error(`unsupported schema type ${schema.type}`);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const generated = generateFirecrackerTypes(readFileSync(SPEC_PATH, 'utf8'));
  if (process.argv.includes('--check')) {
    let current = '';
    try {
      current = readFileSync(OUTPUT_PATH, 'utf8');
    } catch {
      /* missing counts as drift */
    }
    if (current !== generated) {
      console.error(`${OUTPUT_PATH} is out of date with ${SPEC_PATH}: run \`npm run gen:firecracker\``);
      process.exit(1);
    }
    console.log(`${OUTPUT_PATH} is up to date`);
  } else {
    writeFileSync(OUTPUT_PATH, generated);
    console.log(`wrote ${OUTPUT_PATH}`);
  }
}
