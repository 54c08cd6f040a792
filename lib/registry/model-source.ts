import { parseFittedTransform } from '../core/transform.ts';
import type { LoadedModelBundle, ModelSource } from '../serving/model-source.ts';
import type { ModelRegistry } from './registry.ts';

/**
 * Serves models straight from the registry: the default alias is `champion` (else the newest servable
 * version), and every artifact is checked against the SHA-256 recorded at registration before it is served.
 */
export class RegistryModelSource implements ModelSource {
  constructor(
    private readonly registry: ModelRegistry,
    private readonly alias = 'champion',
  ) {}

  async list(): Promise<string[]> {
    return this.registry.listModels();
  }

  async current(name: string): Promise<string> {
    return String((await this.resolveDefault(name)).version);
  }

  async load(name: string, version?: string): Promise<LoadedModelBundle> {
    const record =
      version === undefined
        ? await this.resolveDefault(name)
        : await this.registry.resolve(`${name}@${version}`);
    const onnx = await this.registry.readArtifact(record, 'model.onnx');
    const transform = parseFittedTransform(
      JSON.parse((await this.registry.readArtifact(record, 'transform.json')).toString('utf8')),
    );
    return { name, version: String(record.version), onnx, transform };
  }

  private async resolveDefault(name: string) {
    const aliases = await this.registry.readAliases(name);
    return aliases.aliases[this.alias] !== undefined
      ? this.registry.resolve(`${name}@${this.alias}`)
      : this.registry.resolve(name);
  }
}
