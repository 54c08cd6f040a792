import { z } from 'zod';
import { ConflictError, IntegrityError, ValidationError } from '../core/errors.ts';
import { NAME_PATTERN } from '../store/layout.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { toJsonBody } from '../store/object-store.ts';
import { ActorSchema, ReasonSchema, type VersionRecord } from './records.ts';

/**
 * Promotion rules as code. One document for the whole registry, kept in the lake next to what it governs
 * (`registry/_policy/current.json`, `_` so it can never clash with a model name), so the Lambda on AWS, the
 * local server and the CLI all enforce the same revision. Every write is a compare-and-swap and leaves a
 * create-only copy under `registry/_policy/history/`, so the policy in force at any time can be shown.
 */
export const POLICY_KEY = 'registry/_policy/current.json';
export const POLICY_HISTORY_PREFIX = 'registry/_policy/history/';
const historyKey = (revision: number) => `${POLICY_HISTORY_PREFIX}${String(revision).padStart(6, '0')}.json`;

/** An approver pattern: a user name / IAM ARN, with `*` as a wildcard (`*` alone = anyone). */
const ApproverPatternSchema = z.string().min(1).max(256);

/** A person's sign-off: at least `minApprovals` distinct approvers (the registrant's own does not count). */
const ApprovalRuleSchema = z.strictObject({
  rule: z.literal('approval'),
  minApprovals: z.number().int().min(1).max(10).default(1),
});
/**
 * The evaluation gate passed, against the champion that is champion now, with an improvement of at least
 * `minImprovement` on the gate's metric (sign already normalised: positive = better).
 */
const GateRuleSchema = z.strictObject({
  rule: z.literal('gate'),
  minImprovement: z.number().min(0).default(0),
  /** Only accept gates measured on this metric (e.g. `roc_auc`). @default - the gate's own metric */
  metric: z.string().min(1).optional(),
  /** Whether a model's first version (no champion to beat) may pass this rule. */
  allowFirstVersion: z.boolean().default(true),
});
/** A floor or ceiling on one of the version's recorded metrics. */
const MetricRuleSchema = z
  .strictObject({
    rule: z.literal('metric'),
    metric: z.string().min(1),
    min: z.number().optional(),
    max: z.number().optional(),
  })
  .refine((rule) => rule.min !== undefined || rule.max !== undefined, {
    message: 'a metric rule needs min, max or both',
  });

export const PolicyRuleSchema = z.discriminatedUnion('rule', [
  ApprovalRuleSchema,
  GateRuleSchema,
  MetricRuleSchema,
]);
export type PolicyRule = z.infer<typeof PolicyRuleSchema>;

const DEFAULT_ANY_OF: PolicyRule[] = [
  { rule: 'approval', minApprovals: 1 },
  { rule: 'gate', minImprovement: 0, allowFirstVersion: true },
];

/** The rules of one model (or the default for every model). */
export const ModelPolicySchema = z.strictObject({
  /** Who may approve or reject. @default ['*'] (anyone the API lets in) */
  approvers: z.array(ApproverPatternSchema).min(1).default(['*']),
  /** Whether whoever registered a version may approve it. */
  allowSelfApproval: z.boolean().default(false),
  /** Promotion to production (and so the `champion` alias). */
  production: z
    .strictObject({
      /** Every one of these must hold. */
      allOf: z.array(PolicyRuleSchema).default([]),
      /** At least one of these must hold (ignored when empty). */
      anyOf: z.array(PolicyRuleSchema).default(DEFAULT_ANY_OF),
    })
    .default({ allOf: [], anyOf: DEFAULT_ANY_OF }),
});
export type ModelPolicy = z.infer<typeof ModelPolicySchema>;

const ModelPoliciesSchema = z.record(
  z.string().regex(NAME_PATTERN, 'model names: lower-case letters, digits, - and _'),
  ModelPolicySchema,
);

/** What a person writes (and `PUT /policy` takes): defaults plus per-model overrides. */
export const PolicySpecSchema = z.strictObject({
  default: ModelPolicySchema.default(ModelPolicySchema.parse({})),
  models: ModelPoliciesSchema.default({}),
});
export type PolicySpec = z.infer<typeof PolicySpecSchema>;

/** The stored document: the spec plus its revision and who changed it, when and why. */
export const PolicyDocumentSchema = z.strictObject({
  kind: z.literal('kiln.registry-policy'),
  /** 1, 2, 3, … for stored revisions; 0 is the built-in default, in force until someone writes one. */
  revision: z.number().int().nonnegative(),
  updatedAt: z.string(),
  updatedBy: z.string(),
  reason: z.string(),
  default: ModelPolicySchema,
  models: ModelPoliciesSchema,
});
export type PolicyDocument = z.infer<typeof PolicyDocumentSchema>;

/**
 * A policy file as edited: the spec, optionally with the metadata of the revision it was copied from
 * (`kiln models policy show --json > policy.json`); that `revision` then guards the write.
 */
export const PolicyFileSchema = PolicySpecSchema.extend({
  kind: z.literal('kiln.registry-policy').optional(),
  revision: z.number().int().nonnegative().optional(),
  updatedAt: z.string().optional(),
  updatedBy: z.string().optional(),
  reason: z.string().optional(),
});

/** `PUT /policy` body. */
export const PolicyUpdateRequestSchema = z.strictObject({
  policy: PolicyFileSchema,
  reason: ReasonSchema,
  /** Refuse the write unless the stored revision is still this one (optimistic locking for editors). */
  expectedRevision: z.number().int().nonnegative().optional(),
});

/** The policy in force when none was ever written. */
export function defaultPolicy(): PolicyDocument {
  return {
    kind: 'kiln.registry-policy',
    revision: 0,
    updatedAt: '1970-01-01T00:00:00.000Z',
    updatedBy: 'kiln',
    reason: 'built-in default: approval by a person, or a passed evaluation gate that beats the champion',
    ...PolicySpecSchema.parse({}),
  };
}

/** The rules for one model: its override if any, else the default. */
export function policyFor(policy: PolicyDocument, model: string): ModelPolicy {
  return policy.models[model] ?? policy.default;
}

/** Whether an actor matches an approver pattern (`*` wildcards). */
export function matchesApprover(actor: string, patterns: readonly string[]): boolean {
  return patterns.some((pattern) => {
    const regex = new RegExp(`^${pattern.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*')}$`);
    return regex.test(actor);
  });
}

/** Who registered a version (the first history entry). */
export function registrantOf(record: VersionRecord): string | undefined {
  return record.history[0]?.by;
}

/** Reads and writes the policy document with compare-and-swap, keeping every revision. */
export class PolicyStore {
  constructor(private readonly store: ObjectStore) {}

  /** The policy in force (the built-in default, revision 0, until one is written). */
  async read(): Promise<PolicyDocument> {
    return (await this.readWithEtag()).policy;
  }

  /** Every stored revision, oldest first. */
  async history(): Promise<PolicyDocument[]> {
    const keys = (await this.store.list(POLICY_HISTORY_PREFIX)).map((info) => info.key);
    return Promise.all(keys.map(async (key) => parsePolicy(await this.store.get(key), key)));
  }

  /**
   * Stores a new revision. `expectedRevision` (or the `revision` the file was copied from) must still be the
   * current one, so two editors never silently overwrite each other.
   */
  async write(
    file: unknown,
    options: { actor: string; reason: string; expectedRevision?: number },
  ): Promise<PolicyDocument> {
    const parsed = PolicyFileSchema.safeParse(file);
    if (!parsed.success) {
      throw new ValidationError(`invalid policy: ${describeIssues(parsed.error)}`, { cause: parsed.error });
    }
    const actor = ActorSchema.parse(options.actor);
    const reason = ReasonSchema.parse(options.reason);
    const expected = options.expectedRevision ?? parsed.data.revision;
    const spec = PolicySpecSchema.parse({ default: parsed.data.default, models: parsed.data.models });
    for (let attempt = 0; attempt < 20; attempt++) {
      const { policy: current, etag } = await this.readWithEtag();
      if (etag) await this.ensureHistory(current);
      if (expected !== undefined && expected !== current.revision) {
        throw new ConflictError(
          `the policy is at revision ${current.revision}, not ${expected}: someone changed it; re-read it and apply your edit again`,
        );
      }
      const next: PolicyDocument = {
        kind: 'kiln.registry-policy',
        revision: current.revision + 1,
        updatedAt: new Date().toISOString(),
        updatedBy: actor,
        reason,
        ...spec,
      };
      try {
        await this.store.put(POLICY_KEY, toJsonBody(next), etag ? { ifMatch: etag } : { ifNoneMatch: '*' });
      } catch (error) {
        if (error instanceof ConflictError) continue;
        throw error;
      }
      await this.ensureHistory(next);
      return next;
    }
    throw new ConflictError('too much contention on the registry policy; try again');
  }

  private async readWithEtag(): Promise<{ policy: PolicyDocument; etag?: string }> {
    // head before get: a newer body with an older etag only makes the next swap fail, never succeed wrongly.
    const info = await this.store.head(POLICY_KEY);
    if (!info) return { policy: defaultPolicy() };
    return { policy: parsePolicy(await this.store.get(POLICY_KEY), POLICY_KEY), etag: info.etag };
  }

  /** The head is written first; its history copy follows, and is repaired here if a writer died in between. */
  private async ensureHistory(policy: PolicyDocument): Promise<void> {
    try {
      await this.store.put(historyKey(policy.revision), toJsonBody(policy), { ifNoneMatch: '*' });
    } catch (error) {
      if (!(error instanceof ConflictError)) throw error;
    }
  }
}

function parsePolicy(body: Buffer, key: string): PolicyDocument {
  try {
    return PolicyDocumentSchema.parse(JSON.parse(body.toString('utf8')));
  } catch (error) {
    throw new IntegrityError(`the registry policy ${key} is unreadable; restore it from its history`, {
      cause: error,
    });
  }
}

function describeIssues(error: z.ZodError): string {
  return error.issues.map((issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`).join('; ');
}

/** Gate figures the training pipeline records on a version (see lib/training/steps.ts `evaluateTraining`). */
const GateSchema = z.looseObject({
  passed: z.boolean(),
  metric: z.string(),
  championVersion: z.number().int().positive().nullable(),
  improvement: z.number().nullable(),
  reason: z.string().optional(),
});

/** The outcome of checking one promotion against the policy. */
export interface PromotionDecision {
  allowed: boolean;
  policyRevision: number;
  /** Rules that held, in words. */
  satisfied: string[];
  /** Why the promotion is refused, in words (empty when allowed). */
  violations: string[];
}

/**
 * Decides whether `record` may go to production while `champion` is the current champion. Pure: the
 * caller supplies the current state, so the same function serves the API, the CLI and the training pipeline.
 */
export function evaluatePromotion(
  policy: PolicyDocument,
  record: VersionRecord,
  champion: number | null,
): PromotionDecision {
  const rules = policyFor(policy, record.model);
  const satisfied: string[] = [];
  const violations: string[] = [];
  if (record.stage === 'rejected' || record.stage === 'archived') {
    violations.push(
      `${record.model}@${record.version} is ${record.stage}; only a new version can be promoted`,
    );
  }
  if (champion === record.version) {
    violations.push(`${record.model}@${record.version} is already the champion`);
  }
  for (const rule of rules.production.allOf) {
    const outcome = checkRule(rule, rules, record, champion);
    (outcome.ok ? satisfied : violations).push(outcome.text);
  }
  const anyOf = rules.production.anyOf.map((rule) => checkRule(rule, rules, record, champion));
  if (anyOf.length > 0) {
    const passing = anyOf.filter((outcome) => outcome.ok);
    if (passing.length > 0) satisfied.push(...passing.map((outcome) => outcome.text));
    else violations.push(`none of the promotion paths holds: ${anyOf.map((o) => o.text).join('; ')}`);
  }
  return { allowed: violations.length === 0, policyRevision: policy.revision, satisfied, violations };
}

function checkRule(
  rule: PolicyRule,
  rules: ModelPolicy,
  record: VersionRecord,
  champion: number | null,
): { ok: boolean; text: string } {
  switch (rule.rule) {
    case 'approval': {
      const registrant = registrantOf(record);
      const counted = new Set(
        (record.approvals ?? [])
          .filter((approval) => matchesApprover(approval.by, rules.approvers))
          .filter((approval) => rules.allowSelfApproval || approval.by !== registrant)
          .map((approval) => approval.by),
      );
      const ok = counted.size >= rule.minApprovals;
      return {
        ok,
        text: ok
          ? `approved by ${[...counted].join(', ')}`
          : `approval: needs ${rule.minApprovals} approval(s) by ${rules.approvers.join(', ')}${rules.allowSelfApproval ? '' : ' (not the registrant)'}, has ${counted.size}`,
      };
    }
    case 'gate': {
      const parsed = GateSchema.safeParse(record.gate);
      if (!parsed.success) return { ok: false, text: 'gate: the version has no evaluation gate result' };
      const gate = parsed.data;
      if (rule.metric !== undefined && gate.metric !== rule.metric) {
        return { ok: false, text: `gate: measured ${gate.metric}, the policy compares ${rule.metric}` };
      }
      if (!gate.passed)
        return { ok: false, text: `gate: did not pass (${gate.reason ?? 'no reason recorded'})` };
      if (gate.championVersion !== champion) {
        return {
          ok: false,
          text: `gate: compared against ${gate.championVersion === null ? 'no champion' : `champion ${gate.championVersion}`}, but the champion is now ${champion ?? 'none'}; evaluate again`,
        };
      }
      if (champion === null) {
        return rule.allowFirstVersion
          ? { ok: true, text: 'gate passed: first version, no champion to beat' }
          : {
              ok: false,
              text: 'gate: there is no champion to beat and the policy forbids first-version promotion',
            };
      }
      const improvement = gate.improvement ?? Number.NEGATIVE_INFINITY;
      const ok = improvement > 0 && improvement >= rule.minImprovement;
      return {
        ok,
        text: `gate: ${gate.metric} ${ok ? 'beats' : 'does not beat'} champion ${champion} by ${formatNumber(improvement)} (needs ≥ ${rule.minImprovement} and > 0)`,
      };
    }
    case 'metric': {
      const value = record.metrics[rule.metric];
      if (typeof value !== 'number' || !Number.isFinite(value)) {
        return { ok: false, text: `metric: ${rule.metric} is not recorded on the version` };
      }
      const ok =
        (rule.min === undefined || value >= rule.min) && (rule.max === undefined || value <= rule.max);
      const range = [
        rule.min !== undefined ? `≥ ${rule.min}` : '',
        rule.max !== undefined ? `≤ ${rule.max}` : '',
      ]
        .filter(Boolean)
        .join(' and ');
      return { ok, text: `metric: ${rule.metric} = ${formatNumber(value)} (needs ${range})` };
    }
  }
}

function formatNumber(value: number): string {
  return Number.isFinite(value) ? String(Number(value.toPrecision(6))) : String(value);
}
