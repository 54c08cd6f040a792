import { z } from 'zod';
import { ValidationError } from './errors.ts';
import { type ColumnType, ColumnTypeSchema } from './schema.ts';
import { describeValue } from './transform-values.ts';

/** The JSON document of a transform spec and its fitted form (see docs/transform-spec.md). */

export const STEP_OPS = [
  'impute',
  'clip',
  'scale',
  'log',
  'onehot',
  'ordinal',
  'hash',
  'dateparts',
  'drop',
] as const;
export type StepOp = (typeof STEP_OPS)[number];
export const DATE_PARTS = ['year', 'month', 'day', 'dayofweek', 'hour'] as const;
export type DatePart = (typeof DATE_PARTS)[number];

/** Steps that turn a column into its features; at most one per column, always last. */
export const ENCODER_OPS: ReadonlySet<StepOp> = new Set(['onehot', 'ordinal', 'hash', 'dateparts', 'drop']);
/** Encoders that read the column as category keys (strings) rather than numbers. */
export const CATEGORICAL_OPS: ReadonlySet<StepOp> = new Set(['onehot', 'ordinal', 'hash']);

const finite = z.number();
const quantile = z.number().min(0).max(1);
const categoryList = z
  .array(z.string().min(1))
  .min(1)
  .refine((list) => new Set(list).size === list.length, { error: 'categories must be unique' });

const ImputeStepSchema = z
  .strictObject({
    op: z.literal('impute'),
    strategy: z.enum(['mean', 'median', 'mode', 'constant']),
    value: z.union([finite, z.string(), z.boolean()]).optional(),
  })
  .superRefine((step, ctx) => {
    if (step.strategy === 'constant' && step.value === undefined) {
      ctx.addIssue({ code: 'custom', path: ['value'], message: 'strategy "constant" needs a value' });
    }
    if (step.strategy !== 'constant' && step.value !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['value'],
        message: `value is only allowed with strategy "constant", not "${step.strategy}"`,
      });
    }
  });

const ClipStepSchema = z
  .strictObject({
    op: z.literal('clip'),
    min: finite.optional(),
    max: finite.optional(),
    lowerQuantile: quantile.optional(),
    upperQuantile: quantile.optional(),
  })
  .superRefine((step, ctx) => {
    const lower = step.min !== undefined || step.lowerQuantile !== undefined;
    const upper = step.max !== undefined || step.upperQuantile !== undefined;
    if (!lower && !upper) {
      ctx.addIssue({
        code: 'custom',
        message: 'clip needs at least one of min, max, lowerQuantile, upperQuantile',
      });
    }
    if (step.min !== undefined && step.lowerQuantile !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['lowerQuantile'],
        message: 'give either min or lowerQuantile, not both',
      });
    }
    if (step.max !== undefined && step.upperQuantile !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['upperQuantile'],
        message: 'give either max or upperQuantile, not both',
      });
    }
    if (step.min !== undefined && step.max !== undefined && step.min > step.max) {
      ctx.addIssue({ code: 'custom', path: ['max'], message: `max ${step.max} is below min ${step.min}` });
    }
    if (
      step.lowerQuantile !== undefined &&
      step.upperQuantile !== undefined &&
      step.lowerQuantile > step.upperQuantile
    ) {
      ctx.addIssue({
        code: 'custom',
        path: ['upperQuantile'],
        message: `upperQuantile ${step.upperQuantile} is below lowerQuantile ${step.lowerQuantile}`,
      });
    }
  });

const ScaleStepSchema = z.strictObject({ op: z.literal('scale'), method: z.enum(['standard', 'minmax']) });

const LogStepSchema = z.strictObject({ op: z.literal('log'), offset: finite.optional() });

const categoricalShape = {
  maxCategories: z.number().int().min(1).max(10_000).optional(),
  categories: categoryList.optional(),
  unknown: z.literal('bucket').optional(),
};
const noLimitWithList = (step: { maxCategories?: number; categories?: string[] }, ctx: z.RefinementCtx) => {
  if (step.maxCategories !== undefined && step.categories !== undefined) {
    ctx.addIssue({
      code: 'custom',
      path: ['maxCategories'],
      message:
        'maxCategories limits learned categories; it cannot be combined with an explicit categories list',
    });
  }
};
const OneHotStepSchema = z
  .strictObject({ op: z.literal('onehot'), ...categoricalShape })
  .superRefine(noLimitWithList);
const OrdinalStepSchema = z
  .strictObject({ op: z.literal('ordinal'), ...categoricalShape })
  .superRefine(noLimitWithList);

const HashStepSchema = z.strictObject({
  op: z.literal('hash'),
  buckets: z.number().int().min(1).max(65_536),
});

const DatePartsStepSchema = z.strictObject({
  op: z.literal('dateparts'),
  parts: z
    .array(z.enum(DATE_PARTS))
    .min(1)
    .refine((parts) => new Set(parts).size === parts.length, { error: 'parts must be unique' }),
});

const DropStepSchema = z.strictObject({ op: z.literal('drop') });

/** One per-column step; `op` names it. Unknown ops are rejected with the list of allowed ones. */
export const StepSchema = z.discriminatedUnion(
  'op',
  [
    ImputeStepSchema,
    ClipStepSchema,
    ScaleStepSchema,
    LogStepSchema,
    OneHotStepSchema,
    OrdinalStepSchema,
    HashStepSchema,
    DatePartsStepSchema,
    DropStepSchema,
  ],
  {
    error: (issue) => {
      if (issue.code !== 'invalid_union') return undefined;
      const input = issue.input as { op?: unknown } | undefined;
      const op = input?.op;
      return op === undefined
        ? `a step needs an "op"; allowed steps: ${STEP_OPS.join(', ')}`
        : `unknown step ${describeValue(op)}; allowed steps: ${STEP_OPS.join(', ')}`;
    },
  },
);
export type Step = z.infer<typeof StepSchema>;
export type ImputeStep = z.infer<typeof ImputeStepSchema>;
export type ClipStep = z.infer<typeof ClipStepSchema>;
export type OneHotStep = z.infer<typeof OneHotStepSchema>;
export type OrdinalStep = z.infer<typeof OrdinalStepSchema>;

const TransformColumnSchema = z.strictObject({
  name: z.string().min(1),
  type: ColumnTypeSchema,
  /** May a request leave this column out or send null? Defaults to true. */
  nullable: z.boolean().optional(),
  steps: z.array(StepSchema),
});
export type TransformColumn = z.infer<typeof TransformColumnSchema>;

const specShape = {
  kind: z.literal('kiln.transform'),
  version: z.literal(1),
  target: z.string().min(1).optional(),
  columns: z.array(TransformColumnSchema).min(1),
};

/** The rules zod's shapes cannot express: step order, step/type compatibility, unique names. */
function checkSpec(spec: { target?: string; columns: TransformColumn[] }, ctx: z.RefinementCtx): void {
  const seen = new Set<string>();
  let featureColumns = 0;
  spec.columns.forEach((column, ci) => {
    if (seen.has(column.name)) {
      ctx.addIssue({
        code: 'custom',
        path: ['columns', ci, 'name'],
        message: `duplicate column "${column.name}"`,
      });
    }
    seen.add(column.name);
    if (column.name === spec.target) {
      ctx.addIssue({
        code: 'custom',
        path: ['columns', ci, 'name'],
        message: `"${column.name}" is the target; it cannot also be a feature column`,
      });
    }
    for (const [si, message] of columnProblems(column)) {
      ctx.addIssue({
        code: 'custom',
        path: ['columns', ci, 'steps', ...(si === undefined ? [] : [si])],
        message,
      });
    }
    if (!column.steps.some((s) => s.op === 'drop')) featureColumns++;
  });
  if (featureColumns === 0) {
    ctx.addIssue({
      code: 'custom',
      path: ['columns'],
      message: 'every column is dropped; the spec has no features',
    });
  }
}

/** Steps allowed before an encoder, per column type and encoder family. */
function allowedValueSteps(type: ColumnType, categorical: boolean): ReadonlySet<StepOp> {
  if (type === 'timestamp') return new Set();
  if (categorical || type === 'string' || type === 'boolean') return new Set(['impute']);
  return new Set(['impute', 'clip', 'scale', 'log']);
}

function columnProblems(column: TransformColumn): Array<[number | undefined, string]> {
  const problems: Array<[number | undefined, string]> = [];
  const { steps, type } = column;
  const encoderIndex = steps.findIndex((s) => ENCODER_OPS.has(s.op));
  const encoder = encoderIndex >= 0 ? steps[encoderIndex] : undefined;
  steps.forEach((step, si) => {
    if (ENCODER_OPS.has(step.op) && si !== steps.length - 1) {
      problems.push([
        si,
        `${step.op} encodes the column and must be its last step (at most one encoder per column)`,
      ]);
    }
  });
  if (encoder?.op === 'drop' && steps.length !== 1) {
    problems.push([encoderIndex, 'drop must be the only step of its column']);
    return problems;
  }
  if (encoder && CATEGORICAL_OPS.has(encoder.op) && !['string', 'integer', 'boolean'].includes(type)) {
    problems.push([
      encoderIndex,
      `${encoder.op} needs a string, integer or boolean column; this one is ${type}`,
    ]);
  }
  if (encoder?.op === 'dateparts' && type !== 'timestamp') {
    problems.push([encoderIndex, `dateparts needs a timestamp column; this one is ${type}`]);
  }
  if (!encoder && type === 'string') {
    problems.push([
      undefined,
      'a string column needs an encoder as its last step: onehot, ordinal, hash or drop',
    ]);
  }
  if (!encoder && type === 'timestamp') {
    problems.push([undefined, 'a timestamp column needs dateparts or drop as its step']);
  }
  // An encoder the type cannot take is already reported; judging the other steps against it adds only noise.
  const categorical =
    encoder !== undefined &&
    CATEGORICAL_OPS.has(encoder.op) &&
    ['string', 'integer', 'boolean'].includes(type);
  const allowed = allowedValueSteps(type, categorical);
  steps.forEach((step, si) => {
    if (ENCODER_OPS.has(step.op)) return;
    if (!allowed.has(step.op)) {
      const why = categorical ? `before ${encoder?.op}` : `on a ${type} column`;
      const list = [...allowed].join(', ') || 'none';
      problems.push([si, `${step.op} is not allowed ${why} (allowed: ${list})`]);
      return;
    }
    if (step.op === 'impute') {
      const problem = imputeProblem(step, type, categorical);
      if (problem) problems.push([si, problem]);
    }
  });
  if (encoder && (encoder.op === 'onehot' || encoder.op === 'ordinal') && encoder.categories) {
    const bad = encoder.categories.find((c) => !validCategoryKey(type, c));
    if (bad !== undefined) {
      problems.push([encoderIndex, `category ${describeValue(bad)} can never occur in a ${type} column`]);
    }
  }
  return problems;
}

function imputeProblem(step: ImputeStep, type: ColumnType, categorical: boolean): string | undefined {
  const numeric = (type === 'number' || type === 'integer') && !categorical;
  if (!numeric && (step.strategy === 'mean' || step.strategy === 'median')) {
    return `impute strategy "${step.strategy}" needs a numeric feature; use "mode" or "constant" on a ${type} column`;
  }
  if (step.strategy !== 'constant') return undefined;
  const value = step.value;
  const expected = type === 'integer' || type === 'number' ? 'number' : type;
  if (typeof value !== expected) {
    return `impute value ${describeValue(value)} does not match the column type ${type}`;
  }
  if (type === 'integer' && categorical && !Number.isInteger(value)) {
    return `impute value ${describeValue(value)} must be an integer category`;
  }
  if (type === 'string' && value === '')
    return 'impute value "" would read as missing; use a non-empty string';
  return undefined;
}

function validCategoryKey(type: ColumnType, key: string): boolean {
  if (type === 'boolean') return key === 'true' || key === 'false';
  if (type === 'integer') return /^-?\d+$/.test(key) && String(Number(key)) === key;
  return true;
}

/** Strict zod schema of the transform spec JSON document. */
export const TransformSpecSchema = z.strictObject(specShape).superRefine(checkSpec);
export type TransformSpec = z.infer<typeof TransformSpecSchema>;

const FittedStepSchema = z.discriminatedUnion('op', [
  z.strictObject({ op: z.literal('impute'), fill: z.union([finite, z.string()]) }),
  z.strictObject({ op: z.literal('clip'), min: finite.nullable(), max: finite.nullable() }),
  z.strictObject({ op: z.literal('scale'), center: finite, scale: finite.refine((s) => s !== 0) }),
  z.strictObject({ op: z.literal('log'), offset: finite }),
  z.strictObject({ op: z.literal('onehot'), categories: z.array(z.string()) }),
  z.strictObject({ op: z.literal('ordinal'), categories: z.array(z.string()) }),
  z.strictObject({ op: z.literal('hash'), buckets: z.number().int().min(1) }),
  z.strictObject({ op: z.literal('dateparts'), parts: z.array(z.enum(DATE_PARTS)) }),
  z.strictObject({ op: z.literal('drop') }),
]);
/** Learned parameters of one step, in the representation `applyTransform` uses. */
export type FittedStep = z.infer<typeof FittedStepSchema>;

export const InputColumnSchema = z.strictObject({
  name: z.string(),
  type: ColumnTypeSchema,
  nullable: z.boolean(),
});
/** A column a request row may carry, in array order. */
export type InputColumn = z.infer<typeof InputColumnSchema>;

/** Strict zod schema of a fitted transform as stored next to a model. */
export const FittedTransformSchema = z
  .strictObject({
    ...specShape,
    fitted: z.literal(true),
    inputs: z.array(InputColumnSchema),
    featureNames: z.array(z.string()),
    params: z.array(z.strictObject({ column: z.string(), steps: z.array(FittedStepSchema) })),
    hash: z.string().regex(/^[0-9a-f]{64}$/),
  })
  .superRefine(checkSpec);
export type FittedTransform = z.infer<typeof FittedTransformSchema>;

/** Zod issues as one message: `columns[0] ("age").steps[1].strategy: … (received "avg")`. */
export function formatIssues(what: string, error: z.ZodError, input: unknown): string {
  const lines = error.issues.map((issue) => {
    const path = formatPath(issue.path, input);
    const received = valueAt(input, issue.path);
    const showReceived =
      (issue.code === 'invalid_value' || issue.code === 'too_small' || issue.code === 'too_big') &&
      (typeof received !== 'object' || received === null);
    return `${path || '(root)'}: ${issue.message}${showReceived ? ` (received ${describeValue(received)})` : ''}`;
  });
  return `invalid ${what}: ${lines.join('; ')}`;
}

function formatPath(path: ReadonlyArray<PropertyKey>, input: unknown): string {
  let out = '';
  let node: unknown = input;
  path.forEach((key, i) => {
    out += typeof key === 'number' ? `[${key}]` : `${out ? '.' : ''}${String(key)}`;
    node =
      typeof node === 'object' && node !== null ? (node as Record<PropertyKey, unknown>)[key] : undefined;
    // Naming the column saves the reader counting array positions.
    if (i === 1 && path[0] === 'columns') {
      const name = (node as { name?: unknown } | undefined)?.name;
      if (typeof name === 'string') out += ` ("${name}")`;
    }
  });
  return out;
}

function valueAt(input: unknown, path: ReadonlyArray<PropertyKey>): unknown {
  let node = input;
  for (const key of path) {
    if (typeof node !== 'object' || node === null) return undefined;
    node = (node as Record<PropertyKey, unknown>)[key];
  }
  return node;
}

/** Validates a transform spec document; throws ValidationError naming the zod issue path. */
export function parseTransformSpec(json: unknown): TransformSpec {
  const result = TransformSpecSchema.safeParse(json);
  if (!result.success) {
    throw new ValidationError(formatIssues('transform spec', result.error, json), { cause: result.error });
  }
  return result.data;
}
