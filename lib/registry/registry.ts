import { createHash, randomUUID } from 'node:crypto';
import {
  ConflictError,
  describeError,
  IntegrityError,
  NotFoundError,
  PolicyError,
  ValidationError,
} from '../core/errors.ts';
import { discardEvents, type EventPublisher, EventTypes } from '../core/events.ts';
import { assertName, lake } from '../store/layout.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { toJsonBody } from '../store/object-store.ts';
import { type RegistryEventInput, type RegistryEventType, registryEventDetail } from './events.ts';
import {
  evaluatePromotion,
  matchesApprover,
  type PolicyDocument,
  PolicyStore,
  type PromotionDecision,
  policyFor,
  registrantOf,
} from './policy.ts';
import {
  ActorSchema,
  ALIAS_PATTERN,
  type Aliases,
  AliasesSchema,
  type ArtifactRef,
  type AuditEntry,
  AuditEntrySchema,
  CHAMPION,
  type Lineage,
  LineageSchema,
  ReasonSchema,
  type Stage,
  type VersionRecord,
  VersionRecordSchema,
} from './records.ts';

/** What training hands to the registry: the artifact bytes plus everything lineage requires. */
export interface RegisterRequest {
  model: string;
  task: VersionRecord['task'];
  classes: string[];
  target: string;
  inputs: VersionRecord['inputs'];
  metrics: Record<string, unknown>;
  /** File name → bytes; must include `model.onnx` and `transform.json`. */
  artifacts: Record<string, Buffer>;
  lineage: Omit<Lineage, 'artifactSha256'> & { artifactSha256?: string };
  gate?: Record<string, unknown>;
  actor: string;
}

/** The outcome of a promotion: the version now in production and the champion it replaced. */
export interface PromotionResult {
  record: VersionRecord;
  previousChampion: number | null;
  decision: PromotionDecision;
}

/** The outcome of a rollback: the champion went from `from` back to `to`; `from` is archived. */
export interface RollbackResult {
  from: number;
  to: number;
  record: VersionRecord;
  archived: VersionRecord;
}

/** One verified artifact. */
export interface ArtifactCheck {
  file: string;
  key: string;
  sha256: string;
  size: number;
}

const MAX_CAS_ATTEMPTS = 200;
let auditSequence = 0;

/** Aborts the champion's compare-and-swap when the policy refuses against the champion being replaced. */
class PromotionRefusal extends Error {
  constructor(readonly violations: string[]) {
    super(violations.join('; '));
  }
}

/**
 * The model registry on the object store, with no database: versions are create-only objects, each
 * version's stage a compare-and-swap on its record, aliases one compare-and-swap document per model, and the
 * audit log create-only entries. Promotion goes through the policy (lib/registry/policy.ts) for every caller.
 */
export class ModelRegistry {
  /** The promotion policy, stored in the lake. */
  readonly policies: PolicyStore;

  constructor(
    private readonly store: ObjectStore,
    private readonly events: EventPublisher = discardEvents,
  ) {
    this.policies = new PolicyStore(store);
  }

  /** Registers a new version (stage `candidate`), verifying lineage and the artifact hash. */
  async register(request: RegisterRequest): Promise<VersionRecord> {
    assertName('model', request.model);
    const actor = parseActor(request.actor);
    const onnx = request.artifacts['model.onnx'];
    if (!onnx || !request.artifacts['transform.json']) {
      throw new ValidationError('a model version needs the artifacts model.onnx and transform.json');
    }
    const artifactSha256 = sha256Hex(onnx);
    if (request.lineage.artifactSha256 !== undefined && request.lineage.artifactSha256 !== artifactSha256) {
      throw new IntegrityError(
        `model.onnx hashes to ${artifactSha256} but lineage says ${request.lineage.artifactSha256}: refusing to register`,
      );
    }
    const lineage = LineageSchema.safeParse({ ...request.lineage, artifactSha256 });
    if (!lineage.success) {
      const fields = lineage.error.issues.map((issue) => issue.path.join('.') || '(root)').join(', ');
      throw new ValidationError(
        `lineage is incomplete or invalid (${fields}): every version must say where it came from`,
      );
    }

    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const version = (await this.latestVersionNumber(request.model)) + 1;
      // Claiming model.onnx create-only decides which writer owns this version number.
      try {
        await this.store.put(lake.modelFile(request.model, version, 'model.onnx'), onnx, {
          ifNoneMatch: '*',
        });
      } catch (error) {
        if (error instanceof ConflictError) continue;
        throw error;
      }
      const artifacts: Record<string, ArtifactRef> = {};
      for (const [file, body] of Object.entries(request.artifacts)) {
        const key = lake.modelFile(request.model, version, file);
        if (file !== 'model.onnx') await this.store.put(key, body, { ifNoneMatch: '*' });
        artifacts[file] = { key, sha256: sha256Hex(body), size: body.length };
      }
      const now = new Date().toISOString();
      const record: VersionRecord = VersionRecordSchema.parse({
        kind: 'kiln.model-version',
        model: request.model,
        version,
        stage: 'candidate',
        createdAt: now,
        task: request.task,
        classes: request.classes,
        target: request.target,
        inputs: request.inputs,
        metrics: request.metrics,
        artifacts,
        lineage: lineage.data,
        gate: request.gate,
        approvals: [],
        history: [{ from: null, to: 'candidate', by: actor, at: now, reason: 'registered' }],
      });
      await this.store.put(lake.registryVersion(request.model, version), toJsonBody(record), {
        ifNoneMatch: '*',
      });
      await this.audit(record.model, { action: 'register', version, actor, reason: 'registered' });
      await this.emit(EventTypes.modelVersionRegistered, {
        model: record.model,
        version,
        actor,
        reason: 'registered',
        stage: record.stage,
        metrics: record.metrics,
        artifactSha256,
        dataset: record.lineage.dataset,
        datasetVersion: record.lineage.datasetVersion,
        algorithm: record.lineage.algorithm,
      });
      return record;
    }
    throw new ConflictError(
      `could not allocate a version of ${request.model} after ${MAX_CAS_ATTEMPTS} attempts`,
    );
  }

  /** Every model group name, sorted. */
  async listModels(): Promise<string[]> {
    const names = new Set<string>();
    for (const info of await this.store.list('registry/')) {
      const [, model, kind] = info.key.split('/');
      if (model && kind === 'versions') names.add(model);
    }
    return [...names].sort();
  }

  /** Every version of a model, oldest first. */
  async listVersions(model: string): Promise<VersionRecord[]> {
    assertName('model', model);
    const keys = (await this.store.list(lake.registryVersionsPrefix(model))).map((info) => info.key);
    if (keys.length === 0) throw new NotFoundError(`model ${model} does not exist`);
    return Promise.all(keys.map((key) => this.readRecord(key)));
  }

  /** Resolves `NAME`, `NAME@VERSION` or `NAME@ALIAS` (default: champion, else the newest version). */
  async resolve(reference: string): Promise<VersionRecord> {
    const { model, ref } = parseModelReference(reference);
    if (ref !== undefined && /^\d+$/.test(ref)) return this.getVersion(model, Number(ref));
    const aliases = (await this.readAliases(model)).aliases;
    if (ref !== undefined) {
      const target = aliases[ref];
      if (target === undefined) throw new NotFoundError(`model ${model} has no alias ${ref}`);
      return this.getServableVersion(model, target, ref);
    }
    if (aliases.champion !== undefined) return this.getServableVersion(model, aliases.champion, 'champion');
    const versions = await this.listVersions(model);
    const newest = versions
      .filter((record) => record.stage !== 'rejected' && record.stage !== 'archived')
      .at(-1);
    if (!newest) throw new NotFoundError(`model ${model} has no servable version`);
    return newest;
  }

  /** One version's record; NotFoundError when it does not exist. */
  async getVersion(model: string, version: number): Promise<VersionRecord> {
    assertName('model', model);
    assertVersion(version);
    return this.readRecord(lake.registryVersion(model, version));
  }

  /** Reads an artifact and verifies it against the hash recorded at registration. */
  async readArtifact(record: VersionRecord, file: string): Promise<Buffer> {
    const ref = record.artifacts[file];
    if (!ref) throw new NotFoundError(`${record.model}@${record.version} has no artifact ${file}`);
    let body: Buffer;
    try {
      body = await this.store.get(ref.key);
    } catch (error) {
      if (!(error instanceof NotFoundError)) throw error;
      throw new IntegrityError(`${record.model}@${record.version} ${file} is missing from ${ref.key}`, {
        cause: error,
      });
    }
    const actual = sha256Hex(body);
    if (actual !== ref.sha256) {
      throw new IntegrityError(
        `${record.model}@${record.version} ${file} was modified after registration (sha256 ${actual}, recorded ${ref.sha256})`,
      );
    }
    return body;
  }

  /** Re-hashes every artifact of a version; IntegrityError naming each file that changed or vanished. */
  async verifyArtifacts(record: VersionRecord): Promise<ArtifactCheck[]> {
    const checks: ArtifactCheck[] = [];
    const problems: string[] = [];
    for (const [file, ref] of Object.entries(record.artifacts)) {
      try {
        await this.readArtifact(record, file);
        checks.push({ file, key: ref.key, sha256: ref.sha256, size: ref.size });
      } catch (error) {
        if (!(error instanceof IntegrityError)) throw error;
        problems.push(describeError(error));
      }
    }
    if (problems.length > 0) throw new IntegrityError(problems.join('; '));
    return checks;
  }

  async readAliases(model: string): Promise<Aliases> {
    assertName('model', model);
    const key = lake.registryAliases(model);
    const info = await this.store.head(key);
    if (!info) {
      await this.listVersions(model); // throws NotFound for an unknown model
      return { kind: 'kiln.aliases', model, aliases: {} };
    }
    return parseAliases(await this.store.get(key), key);
  }

  /**
   * Points an alias at a version (compare-and-swap on the alias document); emits AliasMoved. `champion` is
   * refused: it moves only through {@link promote} and {@link rollback}, so the policy always applies.
   */
  async setAlias(
    model: string,
    alias: string,
    version: number,
    actor: string,
    reason: string,
  ): Promise<Aliases> {
    if (!ALIAS_PATTERN.test(alias)) throw new ValidationError(`invalid alias ${JSON.stringify(alias)}`);
    const by = parseActor(actor);
    const why = parseReason(reason);
    if (alias === CHAMPION) {
      throw new PolicyError(
        `the ${CHAMPION} alias moves only through promote and rollback, so the promotion policy always applies`,
      );
    }
    const record = await this.getVersion(model, version);
    if (record.stage === 'archived' || record.stage === 'rejected') {
      throw new ValidationError(`${model}@${version} is ${record.stage}: an alias cannot point at it`);
    }
    let previous: number | undefined;
    const updated = await this.casAliases(model, (current) => {
      previous = current.aliases[alias];
      return { ...current, aliases: { ...current.aliases, [alias]: version } };
    });
    await this.audit(model, { action: 'set-alias', alias, version, previous, actor: by, reason: why });
    await this.emit(EventTypes.aliasMoved, {
      model,
      alias,
      version,
      previous: previous ?? null,
      actor: by,
      reason: why,
    });
    return updated;
  }

  /** Removes an alias (not `champion`); emits AliasMoved with version `null`. */
  async removeAlias(model: string, alias: string, actor: string, reason: string): Promise<Aliases> {
    if (!ALIAS_PATTERN.test(alias)) throw new ValidationError(`invalid alias ${JSON.stringify(alias)}`);
    const by = parseActor(actor);
    const why = parseReason(reason);
    if (alias === CHAMPION) {
      throw new PolicyError(`the ${CHAMPION} alias cannot be removed; promote another version or roll back`);
    }
    const existing = await this.readAliases(model);
    if (existing.aliases[alias] === undefined)
      throw new NotFoundError(`model ${model} has no alias ${alias}`);
    let previous: number | undefined;
    const updated = await this.casAliases(model, (current) => {
      previous = current.aliases[alias];
      if (previous === undefined) throw new NotFoundError(`model ${model} has no alias ${alias}`);
      const { [alias]: _removed, ...rest } = current.aliases;
      return { ...current, aliases: rest };
    });
    await this.audit(model, { action: 'remove-alias', alias, previous, actor: by, reason: why });
    await this.emit(EventTypes.aliasMoved, {
      model,
      alias,
      version: null,
      previous: previous ?? null,
      actor: by,
      reason: why,
    });
    return updated;
  }

  /**
   * A person signs off on a version: `candidate` → `approved` (a further approver adds a signature). The
   * policy says who may approve and whether the registrant may approve their own version.
   */
  async approve(model: string, version: number, actor: string, reason: string): Promise<VersionRecord> {
    const by = parseActor(actor);
    const why = parseReason(reason);
    const existing = await this.getVersion(model, version);
    const policy = await this.policies.read();
    const rules = policyFor(policy, model);
    const refusal = !matchesApprover(by, rules.approvers)
      ? `${by} is not an approver of ${model} (approvers: ${rules.approvers.join(', ')})`
      : !rules.allowSelfApproval && by === registrantOf(existing)
        ? `${by} registered ${model}@${version} and may not approve it (policy revision ${policy.revision})`
        : undefined;
    if (refusal) {
      await this.audit(model, { action: 'approval-refused', version, actor: by, reason: why, refusal });
      throw new PolicyError(refusal);
    }
    let from: Stage = existing.stage;
    const record = await this.updateRecord(model, version, (current) => {
      if (current.stage !== 'candidate' && current.stage !== 'approved') {
        throw new ConflictError(
          `${model}@${version} is ${current.stage}: only candidate or approved versions can be approved`,
        );
      }
      if ((current.approvals ?? []).some((approval) => approval.by === by)) {
        throw new ConflictError(`${by} already approved ${model}@${version}`);
      }
      from = current.stage;
      const at = new Date().toISOString();
      return {
        ...current,
        stage: 'approved',
        approvals: [...(current.approvals ?? []), { by, at, reason: why }],
        history:
          current.stage === 'approved'
            ? current.history
            : [...current.history, { from: current.stage, to: 'approved', by, at, reason: why }],
      };
    });
    const approvals = record.approvals?.length ?? 1;
    await this.audit(model, { action: 'approve', version, actor: by, reason: why, approvals });
    if (from !== 'approved') await this.emitStageChanged(model, version, from, 'approved', by, why);
    await this.emit(EventTypes.modelVersionApproved, {
      model,
      version,
      actor: by,
      reason: why,
      stage: record.stage,
      approvals,
    });
    return record;
  }

  /** Turns a candidate or approved version down for good; aliases other than champion pointing at it are removed. */
  async reject(model: string, version: number, actor: string, reason: string): Promise<VersionRecord> {
    const by = parseActor(actor);
    const why = parseReason(reason);
    await this.getVersion(model, version);
    const rules = policyFor(await this.policies.read(), model);
    if (!matchesApprover(by, rules.approvers)) {
      const refusal = `${by} is not an approver of ${model} (approvers: ${rules.approvers.join(', ')})`;
      await this.audit(model, { action: 'approval-refused', version, actor: by, reason: why, refusal });
      throw new PolicyError(refusal);
    }
    await this.assertNotChampion(model, version, 'rejected');
    let from: Stage = 'candidate';
    const record = await this.updateRecord(model, version, (current) => {
      if (current.stage !== 'candidate' && current.stage !== 'approved') {
        throw new ConflictError(
          `${model}@${version} is ${current.stage}: only candidate or approved versions can be rejected${current.stage === 'production' ? ' (archive it instead)' : ''}`,
        );
      }
      from = current.stage;
      return withStage(current, 'rejected', by, why);
    });
    const detached = await this.detachAliases(model, version);
    await this.audit(model, { action: 'reject', version, actor: by, reason: why, detached });
    await this.emitStageChanged(model, version, from, 'rejected', by, why);
    await this.emit(EventTypes.modelVersionRejected, {
      model,
      version,
      actor: by,
      reason: why,
      stage: 'rejected',
    });
    await this.emitDetached(model, version, detached, by, why);
    return record;
  }

  /** Retires a version that is not the champion; aliases pointing at it are removed. */
  async archive(model: string, version: number, actor: string, reason: string): Promise<VersionRecord> {
    const by = parseActor(actor);
    const why = parseReason(reason);
    await this.getVersion(model, version);
    await this.assertNotChampion(model, version, 'archived');
    let from: Stage = 'candidate';
    const record = await this.updateRecord(model, version, (current) => {
      if (current.stage === 'archived') throw new ConflictError(`${model}@${version} is already archived`);
      from = current.stage;
      return withStage(current, 'archived', by, why);
    });
    const detached = await this.detachAliases(model, version);
    await this.audit(model, { action: 'archive', version, actor: by, reason: why, from, detached });
    await this.emitStageChanged(model, version, from, 'archived', by, why);
    await this.emitDetached(model, version, detached, by, why);
    return record;
  }

  /** What the policy would say about promoting a version now, without changing anything. */
  async checkPromotion(model: string, version: number): Promise<PromotionDecision> {
    const record = await this.getVersion(model, version);
    const champion = (await this.readAliases(model)).aliases[CHAMPION] ?? null;
    return evaluatePromotion(await this.policies.read(), record, champion);
  }

  /**
   * Promotes a version to production and makes it the champion, if the policy allows it against the
   * champion of this moment. A refusal changes nothing, is written to the audit log and emits
   * PromotionRefused. The decision is taken inside the champion's compare-and-swap, so it is always about
   * the champion actually being replaced.
   */
  async promote(model: string, version: number, actor: string, reason: string): Promise<PromotionResult> {
    const by = parseActor(actor);
    const why = parseReason(reason);
    const record = await this.getVersion(model, version);
    const policy = await this.policies.read();
    const refuse = async (violations: string[]) => {
      await this.refusePromotion(model, version, by, why, policy, violations);
      return new PolicyError(
        `promotion of ${model}@${version} to production refused by policy revision ${policy.revision}: ${violations.join('; ')}`,
      );
    };
    // Decide once up front, so a doomed promotion costs no artifact reads.
    let decision = evaluatePromotion(
      policy,
      record,
      (await this.readAliases(model)).aliases[CHAMPION] ?? null,
    );
    if (!decision.allowed) throw await refuse(decision.violations);
    try {
      await this.verifyArtifacts(record);
    } catch (error) {
      if (error instanceof IntegrityError)
        await this.refusePromotion(model, version, by, why, policy, [describeError(error)]);
      throw error;
    }
    // Decide again inside the swap, against the champion of the exact document being replaced: a concurrent
    // promotion makes this one re-decide (a gate measured against the old champion no longer counts).
    let champion: number | null = null;
    try {
      await this.casAliases(model, (current) => {
        champion = current.aliases[CHAMPION] ?? null;
        decision = evaluatePromotion(policy, record, champion);
        if (!decision.allowed) throw new PromotionRefusal(decision.violations);
        return withChampion(current, version);
      });
    } catch (error) {
      if (error instanceof PromotionRefusal) throw await refuse(error.violations);
      throw error;
    }
    const previousChampion: number | null = champion;
    let from: Stage = record.stage;
    let promoted: VersionRecord;
    try {
      promoted = await this.updateRecord(model, version, (current) => {
        if (current.stage === 'rejected' || current.stage === 'archived') {
          throw new ConflictError(`${model}@${version} became ${current.stage} while it was being promoted`);
        }
        from = current.stage;
        return withStage(current, 'production', by, why);
      });
    } catch (error) {
      await this.restoreChampion(model, version, previousChampion);
      throw error;
    }
    await this.audit(model, {
      action: 'promote',
      version,
      actor: by,
      reason: why,
      previousChampion,
      policyRevision: policy.revision,
      satisfied: decision.satisfied,
    });
    if (from !== 'production') await this.emitStageChanged(model, version, from, 'production', by, why);
    await this.emit(EventTypes.aliasMoved, {
      model,
      alias: CHAMPION,
      version,
      previous: previousChampion,
      actor: by,
      reason: why,
    });
    return { record: promoted, previousChampion, decision };
  }

  /**
   * Moves `champion` back to the previous production version (or `to`, which must be in production) and
   * archives the version rolled back from. `from` guards against rolling back twice by accident. Rollback is
   * the emergency path: it is not subject to promotion rules, only to "the target was in production".
   */
  async rollback(
    model: string,
    options: { actor: string; reason: string; from?: number; to?: number },
  ): Promise<RollbackResult> {
    const by = parseActor(options.actor);
    const why = parseReason(options.reason);
    const aliasDoc = await this.readAliases(model);
    const current = aliasDoc.aliases[CHAMPION];
    if (current === undefined) throw new ConflictError(`model ${model} has no champion to roll back`);
    if (options.from !== undefined && options.from !== current) {
      throw new ConflictError(
        `the champion of ${model} is ${current}, not ${options.from}: nothing rolled back`,
      );
    }
    const versions = await this.listVersions(model);
    let target: VersionRecord | undefined;
    if (options.to !== undefined) {
      target = versions.find((record) => record.version === options.to);
      if (!target) throw new NotFoundError(`model version ${model}@${options.to} does not exist`);
      if (target.version === current) throw new ConflictError(`${model}@${current} is already the champion`);
      if (target.stage !== 'production') {
        throw new ConflictError(
          `${model}@${target.version} is ${target.stage}: rollback only goes back to a version in production`,
        );
      }
    } else {
      const eligible = (record: VersionRecord | undefined) =>
        record !== undefined && record.stage === 'production' && record.version !== current;
      // The champion history is in compare-and-swap order; timestamps are the fallback for documents
      // written before it existed (or when it no longer reaches back far enough).
      const byVersion = new Map(versions.map((record) => [record.version, record]));
      const previous = [...(aliasDoc.championHistory ?? [])]
        .reverse()
        .map((version) => byVersion.get(version))
        .find(eligible);
      target =
        previous ??
        versions.filter(eligible).sort((a, b) => {
          const byTime = lastProductionAt(b).localeCompare(lastProductionAt(a));
          return byTime !== 0 ? byTime : b.version - a.version;
        })[0];
      if (!target) {
        throw new ConflictError(`model ${model} has no earlier production version to roll back to`);
      }
    }
    const to = target.version;
    await this.casAliases(model, (doc) => {
      if (doc.aliases[CHAMPION] !== current) {
        throw new ConflictError(`the champion of ${model} moved while rolling back; nothing rolled back`);
      }
      return withChampion(doc, to);
    });
    let from = 'production' as Stage;
    const archived = await this.updateRecord(model, current, (record) => {
      from = record.stage;
      if (record.stage === 'archived') return record;
      return withStage(record, 'archived', by, `rolled back to ${to}: ${why}`);
    });
    await this.audit(model, {
      action: 'rollback',
      version: current,
      from: current,
      to,
      actor: by,
      reason: why,
    });
    await this.emit(EventTypes.aliasMoved, {
      model,
      alias: CHAMPION,
      version: to,
      previous: current,
      actor: by,
      reason: why,
    });
    if (from !== 'archived') {
      await this.emitStageChanged(model, current, from, 'archived', by, `rolled back to ${to}: ${why}`);
    }
    return { from: current, to, record: target, archived };
  }

  /** The model's audit log, oldest first. */
  async readAudit(model: string): Promise<AuditEntry[]> {
    assertName('model', model);
    const infos = await this.store.list(`registry/${model}/audit/`);
    if (infos.length === 0) await this.listVersions(model); // NotFound for an unknown model
    return Promise.all(
      infos.map(async (info) => {
        const body = await this.store.get(info.key);
        try {
          return AuditEntrySchema.parse(JSON.parse(body.toString('utf8')));
        } catch (error) {
          throw new IntegrityError(`audit entry ${info.key} is unreadable`, { cause: error });
        }
      }),
    );
  }

  /** Appends an entry to the model's audit log (one create-only object per entry). */
  async audit(model: string, entry: Omit<AuditEntry, 'at'> & Record<string, unknown>): Promise<void> {
    const at = new Date().toISOString();
    // Keys sort by time; within one millisecond this process's counter keeps its entries in order.
    auditSequence = (auditSequence + 1) % 1e8;
    const id = `${at.replace(/[:.]/g, '-')}-${String(auditSequence).padStart(8, '0')}-${randomUUID().slice(0, 8)}`;
    const body = AuditEntrySchema.parse({ at, ...entry });
    await this.store.put(lake.registryAudit(model, id), toJsonBody(body), { ifNoneMatch: '*' });
  }

  private async refusePromotion(
    model: string,
    version: number,
    actor: string,
    reason: string,
    policy: PolicyDocument,
    violations: string[],
  ): Promise<void> {
    await this.audit(model, {
      action: 'promotion-refused',
      version,
      actor,
      reason,
      policyRevision: policy.revision,
      violations,
    });
    await this.emit(EventTypes.promotionRefused, {
      model,
      version,
      actor,
      reason,
      policyRevision: policy.revision,
      violations,
    });
  }

  /** Undoes a champion move whose stage change failed, unless someone has moved the champion since. */
  private async restoreChampion(model: string, version: number, previous: number | null): Promise<void> {
    await this.casAliases(model, (doc) => {
      if (doc.aliases[CHAMPION] !== version) return doc;
      const { [CHAMPION]: _moved, ...rest } = doc.aliases;
      const history =
        doc.championHistory?.at(-1) === version ? doc.championHistory.slice(0, -1) : doc.championHistory;
      return {
        ...doc,
        aliases: previous === null ? rest : { ...rest, [CHAMPION]: previous },
        ...(history ? { championHistory: history } : {}),
      };
    }).catch(() => undefined);
  }

  private async assertNotChampion(model: string, version: number, becoming: Stage): Promise<void> {
    const champion = (await this.readAliases(model)).aliases[CHAMPION];
    if (champion === version) {
      throw new ConflictError(
        `${model}@${version} is the champion and cannot be ${becoming}: promote another version or roll back first`,
      );
    }
  }

  /** Removes every alias (champion excepted) that points at a version; returns their names. */
  private async detachAliases(model: string, version: number): Promise<Array<{ alias: string }>> {
    const { aliases } = await this.readAliases(model);
    if (!Object.entries(aliases).some(([alias, target]) => target === version && alias !== CHAMPION))
      return [];
    const removed: Array<{ alias: string }> = [];
    await this.casAliases(model, (doc) => {
      removed.length = 0;
      const kept: Record<string, number> = {};
      for (const [alias, target] of Object.entries(doc.aliases)) {
        if (target === version && alias !== CHAMPION) removed.push({ alias });
        else kept[alias] = target;
      }
      return { ...doc, aliases: kept };
    });
    return removed;
  }

  private async emitDetached(
    model: string,
    version: number,
    detached: Array<{ alias: string }>,
    actor: string,
    reason: string,
  ): Promise<void> {
    for (const { alias } of detached) {
      await this.emit(EventTypes.aliasMoved, {
        model,
        alias,
        version: null,
        previous: version,
        actor,
        reason,
      });
    }
  }

  private async emitStageChanged(
    model: string,
    version: number,
    from: Stage,
    to: Stage,
    actor: string,
    reason: string,
  ): Promise<void> {
    await this.emit(EventTypes.modelVersionStageChanged, { model, version, from, to, actor, reason });
  }

  private async getServableVersion(model: string, version: number, alias: string): Promise<VersionRecord> {
    const record = await this.getVersion(model, version).catch((error: unknown) => {
      throw new NotFoundError(`alias ${model}@${alias} points at version ${version}, which does not exist`, {
        cause: error,
      });
    });
    if (record.stage === 'archived' || record.stage === 'rejected') {
      throw new ValidationError(
        `alias ${model}@${alias} points at version ${version}, which is ${record.stage}`,
      );
    }
    return record;
  }

  private async latestVersionNumber(model: string): Promise<number> {
    const infos = await this.store.list(`models/${model}/`);
    let latest = 0;
    for (const info of infos) {
      const version = Number(info.key.split('/')[2]);
      if (Number.isInteger(version) && version > latest) latest = version;
    }
    return latest;
  }

  private async readRecord(key: string): Promise<VersionRecord> {
    let body: Buffer;
    try {
      body = await this.store.get(key);
    } catch (error) {
      if (error instanceof NotFoundError) {
        const [, model, , file] = key.split('/');
        throw new NotFoundError(
          `model version ${model}@${Number(file?.replace('.json', ''))} does not exist`,
          {
            cause: error,
          },
        );
      }
      throw error;
    }
    try {
      return VersionRecordSchema.parse(JSON.parse(body.toString('utf8')));
    } catch (error) {
      throw new IntegrityError(`registry record ${key} is unreadable`, { cause: error });
    }
  }

  /** Compare-and-swap on one version record; `update` may throw to abort without writing. */
  private async updateRecord(
    model: string,
    version: number,
    update: (current: VersionRecord) => VersionRecord,
  ): Promise<VersionRecord> {
    const key = lake.registryVersion(model, version);
    return this.casJson(
      key,
      (current: VersionRecord | undefined) => {
        if (!current) throw new NotFoundError(`model version ${model}@${version} does not exist`);
        return update(current);
      },
      (value) => VersionRecordSchema.parse(value),
    );
  }

  /** Compare-and-swap on a model's alias document (created on first use). */
  private async casAliases(model: string, update: (current: Aliases) => Aliases): Promise<Aliases> {
    assertName('model', model);
    return this.casJson(
      lake.registryAliases(model),
      (current: Aliases | undefined) => update(current ?? { kind: 'kiln.aliases', model, aliases: {} }),
      (value) => AliasesSchema.parse(value),
    );
  }

  /** Read-modify-write with optimistic concurrency: retries when another writer got there first. */
  private async casJson<T>(
    key: string,
    update: (current: T | undefined) => T,
    parse: (value: unknown) => T,
  ): Promise<T> {
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      // head before get: the etag is never newer than the body, so a stale body only makes the swap fail.
      const info = await this.store.head(key);
      let current: T | undefined;
      if (info) {
        try {
          current = parse(JSON.parse((await this.store.get(key)).toString('utf8')));
        } catch (error) {
          if (error instanceof NotFoundError) continue;
          throw new IntegrityError(`registry document ${key} is unreadable`, { cause: error });
        }
      }
      const next = update(current);
      try {
        await this.store.put(key, toJsonBody(next), info ? { ifMatch: info.etag } : { ifNoneMatch: '*' });
        return next;
      } catch (error) {
        if (!(error instanceof ConflictError)) throw error;
        // Jittered, growing pause: many writers on one document otherwise collide again in lock-step.
        await new Promise((resolve) => setTimeout(resolve, Math.random() * 5 * Math.min(attempt + 1, 20)));
      }
    }
    throw new ConflictError(`too much contention on ${key}; try again`);
  }

  private async emit<T extends RegistryEventType>(
    detailType: T,
    input: RegistryEventInput<T>,
  ): Promise<void> {
    const detail = registryEventDetail(detailType, input);
    await this.events.publish([{ source: 'kiln.registry', detailType, detail }]);
  }
}

function withStage(record: VersionRecord, stage: Stage, by: string, reason: string): VersionRecord {
  const at = new Date().toISOString();
  return {
    ...record,
    stage,
    history: [...record.history, { from: record.stage, to: stage, by, at, reason }],
  };
}

const CHAMPION_HISTORY_LENGTH = 50;

function withChampion(doc: Aliases, version: number): Aliases {
  return {
    ...doc,
    aliases: { ...doc.aliases, [CHAMPION]: version },
    championHistory: [...(doc.championHistory ?? []), version].slice(-CHAMPION_HISTORY_LENGTH),
  };
}

function lastProductionAt(record: VersionRecord): string {
  // ISO timestamps sort as strings.
  const times = record.history.filter((change) => change.to === 'production').map((change) => change.at);
  return times.sort().at(-1) ?? '';
}

function parseAliases(body: Buffer, key: string): Aliases {
  try {
    return AliasesSchema.parse(JSON.parse(body.toString('utf8')));
  } catch (error) {
    throw new IntegrityError(`registry document ${key} is unreadable`, { cause: error });
  }
}

function parseActor(actor: string): string {
  const parsed = ActorSchema.safeParse(actor);
  if (!parsed.success) {
    throw new ValidationError(
      `invalid actor ${JSON.stringify(actor)}: 1-256 printable characters naming who acts`,
    );
  }
  return parsed.data;
}

function parseReason(reason: string): string {
  const parsed = ReasonSchema.safeParse(reason);
  if (!parsed.success) {
    throw new ValidationError('a reason is required (1-1000 characters): the audit log records why');
  }
  return parsed.data;
}

function assertVersion(version: number): void {
  if (!Number.isSafeInteger(version) || version < 1) {
    throw new ValidationError(`invalid version ${JSON.stringify(version)}: expected a positive integer`);
  }
}

/** Parses `NAME`, `NAME@VERSION` or `NAME@ALIAS`. */
export function parseModelReference(reference: string): { model: string; ref?: string } {
  const [model = '', ref, extra] = reference.split('@');
  if (extra !== undefined) throw new ValidationError(`invalid model reference ${JSON.stringify(reference)}`);
  assertName('model', model);
  if (ref !== undefined && !/^\d+$/.test(ref) && !ALIAS_PATTERN.test(ref)) {
    throw new ValidationError(
      `invalid version or alias ${JSON.stringify(ref)} in ${JSON.stringify(reference)}: use a version number or a lower-case alias`,
    );
  }
  return ref === undefined ? { model } : { model, ref };
}

export function sha256Hex(body: Buffer | Uint8Array): string {
  return createHash('sha256').update(body).digest('hex');
}
