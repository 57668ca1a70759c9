/**
 * A small Swagger 2.0 request validator, enough for Firecracker's spec: paths with {params},
 * methods, the body parameter's schema with $ref, required, type, enum, minimum, maximum,
 * items, int32/int64 ranges and additionalProperties. Object schemas are CLOSED unless they
 * say `additionalProperties` (Firecracker's structs deny unknown fields), so a field the spec
 * does not know is an error.
 *
 * Used by the fake Firecracker (test/fixtures/fake-firecracker.mjs) to check, and refuse,
 * every request the driver sends.
 */
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';

export interface Schema {
  $ref?: string;
  type?: string;
  format?: string;
  enum?: unknown[];
  required?: string[];
  properties?: Record<string, Schema>;
  additionalProperties?: boolean | Schema;
  items?: Schema;
  minimum?: number;
  maximum?: number;
  description?: string;
}

interface Parameter {
  name: string;
  in: 'path' | 'body' | 'query' | 'header';
  required?: boolean;
  type?: string;
  schema?: Schema;
}

interface Operation {
  operationId: string;
  parameters?: Parameter[];
  responses: Record<string, { description?: string; schema?: Schema }>;
}

export interface SwaggerSpec {
  swagger: string;
  info: { version: string; title: string };
  paths: Record<string, Record<string, Operation>>;
  definitions: Record<string, Schema>;
}

export function loadSpec(path: string): SwaggerSpec {
  const spec = parse(readFileSync(path, 'utf8')) as SwaggerSpec;
  if (spec?.swagger !== '2.0') throw new Error(`${path} is not a Swagger 2.0 document`);
  return spec;
}

export type RequestCheck =
  | { ok: true; operationId: string; template: string; pathParams: Record<string, string> }
  | { ok: false; status: 400 | 404 | 405; operationId?: string; template?: string; errors: string[] };

const INT_RANGES: Record<string, [number, number]> = {
  int32: [-(2 ** 31), 2 ** 31 - 1],
  int64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
};

export class SpecValidator {
  private readonly routes: { template: string; pattern: RegExp; names: string[]; item: Record<string, Operation> }[];

  constructor(readonly spec: SwaggerSpec) {
    this.routes = Object.entries(spec.paths).map(([template, item]) => {
      const names: string[] = [];
      const pattern = new RegExp(
        `^${template.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\{([^}]+)\}/g, (_, n: string) => {
          names.push(n);
          return '([^/]+)';
        })}$`,
      );
      return { template, pattern, names, item };
    });
  }

  /**
   * Checks one request: `url` is the request target, `body` the parsed JSON body or
   * undefined when the request had none.
   */
  validateRequest(method: string, url: string, body: unknown): RequestCheck {
    const path = url.split('?')[0];
    const route = this.routes.find((r) => r.pattern.test(path));
    if (!route) return { ok: false, status: 404, errors: [`no path ${path} in the spec`] };
    const op = route.item[method.toLowerCase()];
    if (!op)
      return {
        ok: false,
        status: 405,
        template: route.template,
        errors: [`${method} is not an operation of ${route.template}`],
      };
    const m = route.pattern.exec(path)!;
    const pathParams: Record<string, string> = {};
    route.names.forEach((n, i) => (pathParams[n] = decodeURIComponent(m[i + 1])));
    const errors: string[] = [];
    for (const p of op.parameters ?? []) {
      if (p.in === 'path') {
        const v = pathParams[p.name];
        if (p.required && (v === undefined || v === '')) errors.push(`path parameter ${p.name} is required`);
        if (v !== undefined && p.type) errors.push(...this.validate({ type: p.type }, v, `path.${p.name}`));
      }
    }
    const bodyParam = (op.parameters ?? []).find((p) => p.in === 'body');
    if (!bodyParam) {
      if (body !== undefined) errors.push(`${method} ${route.template} takes no body`);
    } else if (body === undefined) {
      if (bodyParam.required)
        errors.push(`${method} ${route.template} needs a body (${bodyParam.schema?.$ref ?? 'object'})`);
    } else {
      errors.push(...this.validate(bodyParam.schema ?? {}, body, 'body'));
    }
    return errors.length
      ? { ok: false, status: 400, operationId: op.operationId, template: route.template, errors }
      : { ok: true, operationId: op.operationId, template: route.template, pathParams };
  }

  /** The errors of `value` against `schema` (empty when it conforms). */
  validate(schema: Schema, value: unknown, where: string): string[] {
    if (schema.$ref) return this.validate(this.resolve(schema.$ref), value, where);
    const errors: string[] = [];
    if (schema.enum && !schema.enum.some((e) => e === value)) {
      errors.push(
        `${where}: ${JSON.stringify(value)} is not one of ${schema.enum.map((e) => JSON.stringify(e)).join(', ')}`,
      );
      return errors;
    }
    const type = schema.type ?? (schema.properties ? 'object' : undefined);
    switch (type) {
      case undefined:
        break;
      case 'string':
        if (typeof value !== 'string') errors.push(`${where}: expected a string, got ${describe(value)}`);
        break;
      case 'boolean':
        if (typeof value !== 'boolean') errors.push(`${where}: expected a boolean, got ${describe(value)}`);
        break;
      case 'integer':
      case 'number': {
        if (typeof value !== 'number' || !Number.isFinite(value) || (type === 'integer' && !Number.isInteger(value))) {
          errors.push(`${where}: expected ${type === 'integer' ? 'an integer' : 'a number'}, got ${describe(value)}`);
          break;
        }
        if (schema.minimum !== undefined && value < schema.minimum)
          errors.push(`${where}: ${value} is below the minimum ${schema.minimum}`);
        if (schema.maximum !== undefined && value > schema.maximum)
          errors.push(`${where}: ${value} is above the maximum ${schema.maximum}`);
        const range = schema.format ? INT_RANGES[schema.format] : undefined;
        if (range && (value < range[0] || value > range[1]))
          errors.push(`${where}: ${value} does not fit ${schema.format}`);
        break;
      }
      case 'array':
        if (!Array.isArray(value)) errors.push(`${where}: expected an array, got ${describe(value)}`);
        else if (schema.items)
          value.forEach((v, i) => errors.push(...this.validate(schema.items!, v, `${where}[${i}]`)));
        break;
      case 'object': {
        if (typeof value !== 'object' || value === null || Array.isArray(value)) {
          errors.push(`${where}: expected an object, got ${describe(value)}`);
          break;
        }
        const obj = value as Record<string, unknown>;
        for (const r of schema.required ?? []) if (!(r in obj)) errors.push(`${where}.${r} is required`);
        const props = schema.properties ?? {};
        for (const [k, v] of Object.entries(obj)) {
          if (k in props) errors.push(...this.validate(props[k], v, `${where}.${k}`));
          else if (schema.additionalProperties === true) continue;
          else if (typeof schema.additionalProperties === 'object')
            errors.push(...this.validate(schema.additionalProperties, v, `${where}.${k}`));
          else
            errors.push(
              `${where}.${k} is not a field of this object (known: ${Object.keys(props).join(', ') || 'none'})`,
            );
        }
        break;
      }
      default:
        errors.push(`${where}: the spec uses type ${type}, which this validator does not know`);
    }
    return errors;
  }

  private resolve(ref: string): Schema {
    const m = /^#\/definitions\/(.+)$/.exec(ref);
    const s = m ? this.spec.definitions[m[1]] : undefined;
    if (!s) throw new Error(`unresolvable $ref ${ref}`);
    return s;
  }
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return `${typeof v} ${JSON.stringify(v)?.slice(0, 40) ?? ''}`.trim();
}
