import { CfnElement } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import type { IConstruct } from 'constructs';
import type { KilnPlatformStack, KilnPlatformStackProps } from '../../lib/stacks/platform-stack.ts';
import { createPlatformApp } from '../../lib/stacks/synth.ts';

/** A synthesized platform stack (no bundling, no asset copies, no template linting: fast). */
export interface Synthesized {
  readonly stack: KilnPlatformStack;
  readonly template: Template;
  readonly json: CfnTemplate;
}

export interface CfnResource {
  Type: string;
  Properties?: Record<string, unknown>;
  DependsOn?: string | string[];
}

export interface CfnTemplate {
  Resources: Record<string, CfnResource>;
}

/** Synthesizes the platform stack with the given props; call once per test file. */
export function synthesize(stackProps: KilnPlatformStackProps = {}): Synthesized {
  const { stack } = createPlatformApp({
    bundling: false,
    skipAssetStaging: true,
    cloudFormationValidation: false,
    stackProps,
  });
  const template = Template.fromStack(stack);
  return { stack, template, json: template.toJSON() as CfnTemplate };
}

/** A resource property, typed by the caller; throws (failing the test) when the resource or property is absent. */
export function property<T>(resource: CfnResource | undefined, name: string): T {
  const value = resource?.Properties?.[name];
  if (value === undefined) throw new Error(`resource has no ${name} property`);
  return value as T;
}

/**
 * Resolves CloudFormation intrinsics to readable placeholders: `Ref X` → `<X>`, `GetAtt X.Attr` → `<X.Attr>`,
 * joins concatenated, `Fn::Sub` variables as `<Var>`. What remains is plain JSON/ASL text.
 */
export function flatten(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(flatten);
  if (value === null || typeof value !== 'object') return value;
  const record = value as Record<string, unknown>;
  const keys = Object.keys(record);
  if (keys.length === 1) {
    const join = record['Fn::Join'];
    if (Array.isArray(join)) {
      const [separator, parts] = join as [string, unknown[]];
      return parts.map((part) => String(flatten(part))).join(separator);
    }
    if (typeof record.Ref === 'string') return `<${record.Ref}>`;
    const getAtt = record['Fn::GetAtt'];
    if (Array.isArray(getAtt)) return `<${getAtt.join('.')}>`;
    const sub = record['Fn::Sub'];
    if (typeof sub === 'string') return sub.replace(/\$\{([^}]+)\}/g, '<$1>');
  }
  return Object.fromEntries(Object.entries(record).map(([key, item]) => [key, flatten(item)]));
}

export interface AslState {
  Type: string;
  Resource?: string;
  Parameters?: Record<string, unknown>;
  ResultPath?: string | null;
  ResultSelector?: Record<string, unknown>;
  ItemProcessor?: AslDefinition;
  Retry?: Array<Record<string, unknown>>;
  Catch?: Array<Record<string, unknown>>;
  Next?: string;
  End?: boolean;
  [field: string]: unknown;
}

export interface AslDefinition {
  StartAt: string;
  States: Record<string, AslState>;
  [field: string]: unknown;
}

/** The ASL definition of the state machine with this logical id, intrinsics flattened. */
export function definitionOf(json: CfnTemplate, logicalId: string): AslDefinition {
  const resource = json.Resources[logicalId];
  if (resource?.Type !== 'AWS::StepFunctions::StateMachine')
    throw new Error(`${logicalId} is not a state machine`);
  const text = flatten(resource.Properties?.DefinitionString);
  if (typeof text !== 'string') throw new Error(`${logicalId} has no DefinitionString`);
  return JSON.parse(text) as AslDefinition;
}

/** Every state, nested Map processors included, by name. */
export function allStates(definition: AslDefinition): Map<string, AslState> {
  const states = new Map<string, AslState>();
  const visit = (machine: AslDefinition) => {
    for (const [name, state] of Object.entries(machine.States)) {
      states.set(name, state);
      if (state.ItemProcessor) visit(state.ItemProcessor);
    }
  };
  visit(definition);
  return states;
}

/** The state with this name; throws (failing the test) when it is absent. */
export function stateNamed(definition: AslDefinition, name: string): AslState {
  const state = allStates(definition).get(name);
  if (!state)
    throw new Error(`no state named ${name}; states: ${[...allStates(definition).keys()].join(', ')}`);
  return state;
}

/** Logical id of an L1 resource, or of the resource an L2's default child synthesizes to. */
export function logicalIdOf(stack: KilnPlatformStack, construct: IConstruct): string {
  const element = CfnElement.isCfnElement(construct) ? construct : construct.node.defaultChild;
  if (!element || !CfnElement.isCfnElement(element))
    throw new Error(`${construct.node.path} has no CFN resource`);
  return stack.getLogicalId(element);
}

export interface PolicyStatement {
  Effect: string;
  Action: string | string[];
  Resource: unknown;
  Condition?: unknown;
}

/** Every Allow statement of the IAM policies attached to the role with this logical id, resources flattened. */
export function allowStatementsOfRole(json: CfnTemplate, roleLogicalId: string): PolicyStatement[] {
  const statements: PolicyStatement[] = [];
  for (const resource of Object.values(json.Resources)) {
    if (resource.Type !== 'AWS::IAM::Policy') continue;
    const roles = (resource.Properties?.Roles ?? []) as unknown[];
    if (!roles.some((role) => flatten(role) === `<${roleLogicalId}>`)) continue;
    const document = resource.Properties?.PolicyDocument as { Statement: PolicyStatement[] };
    for (const statement of document.Statement) {
      if (statement.Effect === 'Allow')
        statements.push({ ...statement, Resource: flatten(statement.Resource) });
    }
  }
  return statements;
}

/** Resources (flattened) on which the role is allowed `action` (exact action or a matching wildcard). */
export function resourcesAllowed(statements: PolicyStatement[], action: string): string[] {
  const matches = (pattern: string) =>
    new RegExp(`^${pattern.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*')}$`).test(action);
  const found: string[] = [];
  for (const statement of statements) {
    const actions = Array.isArray(statement.Action) ? statement.Action : [statement.Action];
    if (!actions.some(matches)) continue;
    const resources = Array.isArray(statement.Resource) ? statement.Resource : [statement.Resource];
    for (const resource of resources) found.push(String(resource));
  }
  return found;
}

/** Whether an IAM resource pattern (with `*`) covers a concrete resource string. */
export function covers(pattern: string, resource: string): boolean {
  const regex = new RegExp(`^${pattern.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*')}$`);
  return regex.test(resource);
}
