/** Minimal view of a synthesized CloudFormation template, enough to find state machines and functions. */
export interface CfnTemplate {
  Resources: Record<string, { Type: string; Properties?: Record<string, unknown> }>;
}

export const LOCAL_REGION = 'us-east-1';
export const LOCAL_ACCOUNT = '000000000000';

/**
 * Resolves the intrinsic functions CDK uses inside a DefinitionString (`Fn::Join`, `Ref`, `Fn::GetAtt`)
 * to stable local placeholders, so the synthesized definition becomes plain ASL JSON.
 */
export function resolveIntrinsics(value: unknown, template: CfnTemplate): unknown {
  if (
    typeof value === 'string' ||
    typeof value === 'number' ||
    typeof value === 'boolean' ||
    value === null
  ) {
    return value;
  }
  if (Array.isArray(value)) return value.map((item) => resolveIntrinsics(item, template));
  if (typeof value !== 'object') return value;
  const object = value as Record<string, unknown>;
  const keys = Object.keys(object);
  if (keys.length === 1) {
    const [key] = keys;
    const argument = object[key as string];
    if (key === 'Fn::Join' && Array.isArray(argument)) {
      const [separator, parts] = argument as [string, unknown[]];
      return parts.map((part) => String(resolveIntrinsics(part, template))).join(separator);
    }
    if (key === 'Ref' && typeof argument === 'string') return resolveRef(argument);
    if (key === 'Fn::Sub') {
      const [text, variables] = (Array.isArray(argument) ? argument : [argument, {}]) as [
        string,
        Record<string, unknown>,
      ];
      return String(text).replace(/\$\{([^}!]+)\}/g, (_, name: string) => {
        if (name in variables) return String(resolveIntrinsics(variables[name], template));
        const [logicalId, attribute] = name.split('.');
        return attribute ? resolveGetAtt(logicalId ?? name, attribute, template) : resolveRef(name);
      });
    }
    if (key === 'Fn::GetAtt' && Array.isArray(argument)) {
      const [logicalId, attribute] = argument as [string, string];
      return resolveGetAtt(logicalId, attribute, template);
    }
  }
  return Object.fromEntries(
    Object.entries(object).map(([key, item]) => [key, resolveIntrinsics(item, template)]),
  );
}

function resolveRef(name: string): string {
  switch (name) {
    case 'AWS::Partition':
      return 'aws';
    case 'AWS::Region':
      return LOCAL_REGION;
    case 'AWS::AccountId':
      return LOCAL_ACCOUNT;
    case 'AWS::URLSuffix':
      return 'amazonaws.com';
    default:
      // Resources and parameters (e.g. asset parameters) resolve to their own logical name.
      return name;
  }
}

function resolveGetAtt(logicalId: string, attribute: string, template: CfnTemplate): string {
  const type = template.Resources[logicalId]?.Type;
  if (type === 'AWS::Lambda::Function' && attribute === 'Arn') {
    return `arn:aws:lambda:${LOCAL_REGION}:${LOCAL_ACCOUNT}:function:${logicalId}`;
  }
  if (type === 'AWS::IAM::Role' && attribute === 'Arn') {
    return `arn:aws:iam::${LOCAL_ACCOUNT}:role/${logicalId}`;
  }
  return `${logicalId}.${attribute}`;
}

/** Every state machine in the template, by logical id, with its definition resolved to plain ASL. */
export function stateMachineDefinitions(template: CfnTemplate): Map<string, AslDefinition> {
  const found = new Map<string, AslDefinition>();
  for (const [logicalId, resource] of Object.entries(template.Resources)) {
    if (resource.Type !== 'AWS::StepFunctions::StateMachine') continue;
    const raw = resource.Properties?.DefinitionString;
    const text = resolveIntrinsics(raw, template);
    if (typeof text !== 'string') throw new Error(`state machine ${logicalId} has no DefinitionString`);
    found.set(logicalId, JSON.parse(text) as AslDefinition);
  }
  return found;
}

/** The handler module a Lambda function runs, from its `KILN_HANDLER` environment variable. */
export function handlerOfFunction(template: CfnTemplate, logicalId: string): string {
  const resource = template.Resources[logicalId];
  if (resource?.Type !== 'AWS::Lambda::Function') throw new Error(`${logicalId} is not a Lambda function`);
  const environment = resource.Properties?.Environment as { Variables?: Record<string, unknown> } | undefined;
  const handler = environment?.Variables?.KILN_HANDLER;
  if (typeof handler !== 'string')
    throw new Error(`Lambda function ${logicalId} has no KILN_HANDLER variable`);
  return handler;
}

export interface AslState {
  Type: string;
  Resource?: string;
  Parameters?: Record<string, unknown>;
  ItemProcessor?: AslDefinition;
  Iterator?: AslDefinition;
  Branches?: AslDefinition[];
  [field: string]: unknown;
}

export interface AslDefinition {
  StartAt: string;
  States: Record<string, AslState>;
  [field: string]: unknown;
}

/** Every Task state, including those nested in Map and Parallel states, by state name. */
export function taskStates(definition: AslDefinition): Map<string, AslState> {
  const tasks = new Map<string, AslState>();
  const visit = (machine: AslDefinition) => {
    for (const [name, state] of Object.entries(machine.States)) {
      if (state.Type === 'Task') tasks.set(name, state);
      if (state.ItemProcessor) visit(state.ItemProcessor);
      if (state.Iterator) visit(state.Iterator);
      for (const branch of state.Branches ?? []) visit(branch);
    }
  };
  visit(definition);
  return tasks;
}
