// A script's parameters as a JSON Schema, checked by Ajv: when an admin adds a version (the schema must be a
// valid JSON Schema for an object of named parameters), and when someone asks to run it (the `name=value`
// pairs typed in chat, converted to the declared types, must satisfy it) before any request is stored.
// Refusals name the parameter and the rule in plain words.
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { z } from 'zod';
import { BadRequest } from '../errors.ts';

/** The older `{ name: { type, required, pattern, max } }` form that rows from before versioning hold. */
const legacyParam = z.object({
  type: z.enum(['string', 'integer', 'boolean']).default('string'),
  required: z.boolean().optional(),
  pattern: z.string().max(512).optional(),
  max: z.number().int().positive().optional(),
  description: z.string().max(500).optional(),
});
const legacySchema = z.record(z.string(), legacyParam);

export interface ParamsJsonSchema {
  type: 'object';
  properties: Record<string, Record<string, unknown>>;
  required?: string[];
  additionalProperties?: boolean;
  [k: string]: unknown;
}

const PARAM_NAME = /^[a-z_][a-z0-9_]{0,31}$/;

/** The stored schema as JSON Schema, reading the older form as its equivalent. */
export function toJsonSchema(stored: unknown): ParamsJsonSchema {
  const s = (stored ?? {}) as Record<string, unknown>;
  if (s.type === 'object') return s as ParamsJsonSchema;
  const legacy = legacySchema.safeParse(s);
  if (!legacy.success) throw new BadRequest('script.params_schema', 'The parameter schema is not valid.');
  const properties: ParamsJsonSchema['properties'] = {};
  for (const [name, p] of Object.entries(legacy.data)) {
    properties[name] = {
      type: p.type,
      ...(p.pattern ? { pattern: `^(?:${p.pattern})$` } : {}),
      ...(p.max !== undefined ? { maxLength: p.max } : {}),
      ...(p.description ? { description: p.description } : {}),
    };
  }
  const required = Object.entries(legacy.data)
    .filter(([, p]) => p.required)
    .map(([n]) => n);
  return { type: 'object', properties, required, additionalProperties: false };
}

// `coerceTypes` turns the strings typed in chat into the declared integer, number or boolean; `strict`
// refuses schema keywords Ajv does not know, so a typo in a schema is caught when it is added.
const ajv = new Ajv({ allErrors: true, coerceTypes: true, strict: true, allowUnionTypes: true });
const compiled = new Map<string, ValidateFunction>();

function compile(schema: ParamsJsonSchema): ValidateFunction {
  const key = JSON.stringify(schema);
  let v = compiled.get(key);
  if (!v) {
    v = ajv.compile(schema);
    compiled.set(key, v);
  }
  return v;
}

/**
 * Checks a parameter schema an admin gives for a new version: a JSON Schema (or the older form) describing
 * an object whose properties are the parameters. Returns it as JSON Schema; unknown parameters are refused
 * unless the schema says otherwise. Throws BadRequest naming what is wrong.
 */
export function checkParamsSchema(input: unknown): ParamsJsonSchema {
  const schema = toJsonSchema(input);
  if (typeof schema.properties !== 'object' || schema.properties === null) {
    throw new BadRequest(
      'script.params_schema',
      'The parameter schema needs "properties" (one per parameter).',
    );
  }
  for (const name of Object.keys(schema.properties)) {
    if (!PARAM_NAME.test(name)) {
      throw new BadRequest(
        'script.params_schema',
        `Parameter "${name.slice(0, 40)}": names are lower-case letters, digits and _ (at most 32).`,
      );
    }
  }
  const full = { additionalProperties: false, ...schema };
  try {
    compile(full);
  } catch (err) {
    throw new BadRequest(
      'script.params_schema',
      `The parameter schema is not a valid JSON Schema: ${(err as Error).message.slice(0, 300)}.`,
    );
  }
  return full;
}

const quote = (v: unknown) => JSON.stringify(v);

/** One Ajv error as "name: what the rule asks", the way a person reads it. */
export function describeParamError(e: ErrorObject): string {
  const name = e.instancePath.replace(/^\//, '') || undefined;
  const p = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'required':
      return `${String(p.missingProperty)}: required, but not given (add ${String(p.missingProperty)}=<value>)`;
    case 'additionalProperties':
      return `${String(p.additionalProperty)}: the script has no such parameter`;
    case 'type':
      return `${name}: must be ${p.type === 'integer' ? 'a whole number' : p.type === 'boolean' ? 'true or false' : `a ${String(p.type)}`}`;
    case 'pattern':
      return `${name}: must match the pattern ${String(p.pattern)}`;
    case 'maxLength':
      return `${name}: must be at most ${String(p.limit)} characters`;
    case 'minLength':
      return `${name}: must be at least ${String(p.limit)} characters`;
    case 'maximum':
    case 'exclusiveMaximum':
      return `${name}: must be ${e.keyword === 'maximum' ? 'at most' : 'less than'} ${String(p.limit)}`;
    case 'minimum':
    case 'exclusiveMinimum':
      return `${name}: must be ${e.keyword === 'minimum' ? 'at least' : 'more than'} ${String(p.limit)}`;
    case 'enum':
      return `${name}: must be one of ${(p.allowedValues as unknown[]).map(quote).join(', ')}`;
    case 'const':
      return `${name}: must be ${quote(p.allowedValue)}`;
    default:
      return `${name ?? 'parameters'}: ${e.message ?? 'not allowed'} (${e.keyword})`;
  }
}

/**
 * The `name=value` pairs typed in chat, converted to the schema's types and checked against it. Returns the
 * typed values; throws BadRequest (`request.bad_param`, or `request.missing_param` / `request.unknown_param`
 * when that is all that is wrong) naming each parameter and the rule it breaks.
 */
export function checkArgs(
  scriptName: string,
  stored: unknown,
  given: Record<string, string>,
): Record<string, unknown> {
  const schema = checkParamsSchema(stored);
  const validate = compile(schema);
  const values: Record<string, unknown> = { ...given };
  if (validate(values)) return values;
  const errors = validate.errors ?? [];
  const problems = errors.map(describeParamError);
  const known = Object.keys(schema.properties);
  // One code per kind of mistake when they are all of a kind, so callers can tell them apart.
  const only = (k: string) => errors.every((e) => e.keyword === k);
  const code = only('required')
    ? 'request.missing_param'
    : only('additionalProperties')
      ? 'request.unknown_param'
      : 'request.bad_param';
  throw new BadRequest(
    code,
    `Script ${scriptName} refused its parameters: ${[...new Set(problems)].join('; ')}. It takes: ${known.length ? known.join(', ') : 'no parameters'}.`,
    { problems },
  );
}

/** `domain=<string, required, pattern ^[a-z.]+$>` for each parameter: what `scripts` shows in chat. */
export function describeParams(stored: unknown): string {
  let schema: ParamsJsonSchema;
  try {
    schema = toJsonSchema(stored);
  } catch {
    return '(parameters declared wrongly; ask an admin)';
  }
  const entries = Object.entries(schema.properties ?? {});
  if (!entries.length) return 'no parameters';
  const required = new Set(schema.required ?? []);
  return entries
    .map(([name, p]) => {
      const rules = [String(p.type ?? 'any'), required.has(name) ? 'required' : 'optional'];
      if (p.pattern) rules.push(`pattern ${String(p.pattern)}`);
      if (p.maxLength !== undefined) rules.push(`at most ${String(p.maxLength)} characters`);
      if (p.minimum !== undefined) rules.push(`at least ${String(p.minimum)}`);
      if (p.maximum !== undefined) rules.push(`at most ${String(p.maximum)}`);
      if (Array.isArray(p.enum)) rules.push(`one of ${p.enum.map(quote).join(', ')}`);
      return `${name}=<${rules.join(', ')}>${p.description ? ` ${String(p.description)}` : ''}`;
    })
    .join('  ');
}
