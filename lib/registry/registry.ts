import { createHash, randomUUID } from 'node:crypto';
import { ConflictError, IntegrityError, NotFoundError, ValidationError } from '../core/errors.ts';
import { discardEvents, type EventPublisher, EventTypes, type KilnEvent } from '../core/events.ts';
import { assertName, lake } from '../store/layout.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { toJsonBody } from '../store/object-store.ts';
import {
  ALIAS_PATTERN,
  type Aliases,
  AliasesSchema,
  type ArtifactRef,
  type Lineage,
  LineageSchema,
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

const MAX_CAS_ATTEMPTS = 200;

/**
 * The model registry on the object store, with no database: versions are create-only objects and
 * aliases one compare-and-swap document per model, so concurrent writers never lose an update.
 */
export class ModelRegistry {
  constructor(
    private readonly store: ObjectStore,
    private readonly events: EventPublisher = discardEvents,
  ) {}

  /** Registers a new version (stage `candidate`), verifying lineage and the artifact hash. */
  async register(request: RegisterRequest): Promise<VersionRecord> {
    assertName('model', request.model);
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
        history: [{ from: null, to: 'candidate', by: request.actor, at: now, reason: 'registered' }],
      });
      await this.store.put(lake.registryVersion(request.model, version), toJsonBody(record), {
        ifNoneMatch: '*',
      });
      await this.emit(EventTypes.modelVersionRegistered, {
        model: record.model,
        version,
        stage: record.stage,
        metrics: record.metrics,
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

  async getVersion(model: string, version: number): Promise<VersionRecord> {
    assertName('model', model);
    return this.readRecord(lake.registryVersion(model, version));
  }

  /** Reads an artifact and verifies it against the hash recorded at registration. */
  async readArtifact(record: VersionRecord, file: string): Promise<Buffer> {
    const ref = record.artifacts[file];
    if (!ref) throw new NotFoundError(`${record.model}@${record.version} has no artifact ${file}`);
    const body = await this.store.get(ref.key);
    const actual = sha256Hex(body);
    if (actual !== ref.sha256) {
      throw new IntegrityError(
        `${record.model}@${record.version} ${file} was modified after registration (sha256 ${actual}, recorded ${ref.sha256})`,
      );
    }
    return body;
  }

  async readAliases(model: string): Promise<Aliases> {
    assertName('model', model);
    const key = lake.registryAliases(model);
    const info = await this.store.head(key);
    if (!info) {
      await this.listVersions(model); // throws NotFound for an unknown model
      return { kind: 'kiln.aliases', model, aliases: {} };
    }
    return AliasesSchema.parse(JSON.parse((await this.store.get(key)).toString('utf8')));
  }

  /** Points an alias at a version (compare-and-swap on the alias document); emits AliasMoved. */
  async setAlias(
    model: string,
    alias: string,
    version: number,
    actor: string,
    reason: string,
  ): Promise<Aliases> {
    if (!ALIAS_PATTERN.test(alias)) throw new ValidationError(`invalid alias ${JSON.stringify(alias)}`);
    const record = await this.getVersion(model, version);
    if (record.stage === 'archived' || record.stage === 'rejected') {
      throw new ValidationError(`${model}@${version} is ${record.stage}: an alias cannot point at it`);
    }
    let previous: number | undefined;
    const updated = await this.casJson(
      lake.registryAliases(model),
      (current: Aliases | undefined) => {
        const aliases = current ?? { kind: 'kiln.aliases' as const, model, aliases: {} };
        previous = aliases.aliases[alias];
        return { ...aliases, aliases: { ...aliases.aliases, [alias]: version } };
      },
      AliasesSchema.parse,
    );
    await this.audit(model, { action: 'set-alias', alias, version, previous, actor, reason });
    await this.emit(EventTypes.aliasMoved, { model, alias, version, previous: previous ?? null });
    return updated;
  }

  /** Changes a version's stage (compare-and-swap on its record) and records who, when and why. */
  async setStage(
    model: string,
    version: number,
    stage: Stage,
    actor: string,
    reason: string,
  ): Promise<VersionRecord> {
    const key = lake.registryVersion(model, version);
    let from: Stage | undefined;
    const record = await this.casJson(
      key,
      (current: VersionRecord | undefined) => {
        if (!current) throw new NotFoundError(`${model}@${version} does not exist`);
        from = current.stage;
        const at = new Date().toISOString();
        return {
          ...current,
          stage,
          history: [...current.history, { from: current.stage, to: stage, by: actor, at, reason }],
        };
      },
      VersionRecordSchema.parse,
    );
    await this.audit(model, { action: 'set-stage', version, from, to: stage, actor, reason });
    await this.emit(EventTypes.modelVersionStageChanged, { model, version, from: from ?? null, to: stage });
    if (stage === 'approved') await this.emit(EventTypes.modelVersionApproved, { model, version });
    return record;
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

  /** Read-modify-write with optimistic concurrency: retries when another writer got there first. */
  private async casJson<T>(
    key: string,
    update: (current: T | undefined) => T,
    parse: (value: unknown) => T,
  ): Promise<T> {
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const info = await this.store.head(key);
      const current = info ? parse(JSON.parse((await this.store.get(key)).toString('utf8'))) : undefined;
      const next = update(current);
      try {
        await this.store.put(key, toJsonBody(next), info ? { ifMatch: info.etag } : { ifNoneMatch: '*' });
        return next;
      } catch (error) {
        if (!(error instanceof ConflictError)) throw error;
        await new Promise((resolve) => setTimeout(resolve, Math.random() * 5 * (attempt + 1)));
      }
    }
    throw new ConflictError(`too much contention on ${key}`);
  }

  /** Appends an entry to the model's audit log (one create-only object per entry). */
  async audit(model: string, entry: Record<string, unknown>): Promise<void> {
    const at = new Date().toISOString();
    const id = `${at.replace(/[:.]/g, '-')}-${randomUUID().slice(0, 8)}`;
    await this.store.put(lake.registryAudit(model, id), toJsonBody({ at, ...entry }), { ifNoneMatch: '*' });
  }

  private async emit(detailType: string, detail: Record<string, unknown>): Promise<void> {
    const event: KilnEvent = { source: 'kiln.registry', detailType, detail };
    await this.events.publish([event]);
  }
}

/** Parses `NAME`, `NAME@VERSION` or `NAME@ALIAS`. */
export function parseModelReference(reference: string): { model: string; ref?: string } {
  const [model = '', ref, extra] = reference.split('@');
  if (extra !== undefined) throw new ValidationError(`invalid model reference ${JSON.stringify(reference)}`);
  assertName('model', model);
  if (ref !== undefined && !/^\d+$/.test(ref) && !ALIAS_PATTERN.test(ref)) {
    throw new ValidationError(
      `invalid version or alias ${JSON.stringify(ref)} in ${JSON.stringify(reference)}`,
    );
  }
  return ref === undefined ? { model } : { model, ref };
}

export function sha256Hex(body: Buffer | Uint8Array): string {
  return createHash('sha256').update(body).digest('hex');
}
