/**
 * Compiled checks of the protocol schemas (`@presence/protocol/schema`), and the error message for
 * a value that fails one. Every shape rule lives in the schemas; this file only turns them into
 * fast checks and, on the rare failure, finds the field to name.
 *
 * Decoding is two-speed on purpose: a valid frame costs one compiled check; only an invalid one
 * walks the schema again to say what is wrong, in the same words the server has always used.
 */
import { expectedOf } from '@presence/protocol/schema';
import { Kind, OptionalKind, type Static, type TObject, type TSchema } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { Value } from '@sinclair/typebox/value';

export type Check<T> = (value: unknown) => value is T;

/** A compiled check of `schema` (code generated once, at start). */
export function compile<T extends TSchema>(schema: T): Check<Static<T>> {
  const compiled = TypeCompiler.Compile(schema);
  return (value: unknown): value is Static<T> => compiled.Check(value);
}

export interface FieldFailure {
  field: string;
  /** What the field must be, e.g. `a string or null`. */
  expected: string;
}

/**
 * The first property of `schema`, in declaration order, that `value` gets wrong (a required one
 * missing, or one present with the wrong shape). Fields in `skip` are the caller's to report.
 */
export function invalidField(schema: TObject, value: Record<string, unknown>, skip?: ReadonlySet<string>): FieldFailure | undefined {
  for (const [field, property] of Object.entries(schema.properties)) {
    if (skip?.has(field)) continue;
    const present = value[field] !== undefined;
    if (!present && isOptional(property)) continue;
    if (!present || !Value.Check(property, value[field])) return { field, expected: expected(property) };
  }
  return undefined;
}

/** Unknown fields of an object whose schema allows none, in the value's own order. */
export function unknownFields(schema: TObject, value: Record<string, unknown>): string[] {
  return Object.keys(value).filter((key) => !Object.hasOwn(schema.properties, key));
}

/**
 * What a value of `schema` must be, in words: the schema's own wording if it has one, else one
 * derived from its kind (`a string`, `one of a, b`, `a string or null`, …).
 */
export function expected(schema: TSchema): string {
  const own = expectedOf(schema);
  if (own !== undefined) return own;
  const members = schema.anyOf as TSchema[] | undefined;
  if (members) {
    if (members.every((m) => m[Kind] === 'Literal')) return `one of ${members.map((m) => String(m.const)).join(', ')}`;
    return members.map(expected).join(' or ');
  }
  switch (schema[Kind]) {
    case 'String':
      return 'a string';
    case 'Null':
      return 'null';
    case 'Boolean':
      return 'a boolean';
    case 'Number':
      return 'a number';
    case 'Integer':
      return 'an integer';
    case 'Literal':
      return JSON.stringify(schema.const);
    case 'Array':
      return 'an array';
    default:
      return schema.type === 'object' ? 'an object' : 'valid';
  }
}

function isOptional(schema: TSchema): boolean {
  return (schema as TSchema & { [OptionalKind]?: string })[OptionalKind] === 'Optional';
}
