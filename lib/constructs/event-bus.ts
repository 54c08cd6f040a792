import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import { Construct } from 'constructs';
import { assertIntegerInRange } from './validate.ts';

/** Event sources Kiln publishes on its bus (the `source` field of every Kiln event). */
export const KilnEventSource = {
  etl: 'kiln.etl',
  training: 'kiln.training',
  registry: 'kiln.registry',
  monitoring: 'kiln.monitoring',
  pipeline: 'kiln.pipeline',
} as const;

/** Properties of {@link KilnBus}. */
export interface KilnBusProps {
  /**
   * Days the bus archive keeps events for replay; 0 disables the archive.
   * @default 30
   */
  readonly archiveRetentionDays?: number;
}

/**
 * The platform event bus: pipelines and handlers publish domain events (`EtlRunSucceeded`, model
 * approved, drift detected, …) here, and rules on it wire the retraining loop.
 */
export class KilnBus extends Construct {
  /** The custom event bus. */
  public readonly bus: events.EventBus;
  /** Archive of every Kiln event, for replaying the loop after a fix; absent when disabled. */
  public readonly archive?: events.Archive;

  constructor(scope: Construct, id: string, props: KilnBusProps = {}) {
    super(scope, id);
    const retentionDays = props.archiveRetentionDays ?? 30;
    assertIntegerInRange('archiveRetentionDays', retentionDays, 0, 3650);

    this.bus = new events.EventBus(this, 'Bus', { description: 'Kiln platform events' });
    if (retentionDays > 0) {
      this.archive = this.bus.archive('Archive', {
        description: 'Replayable history of Kiln platform events',
        eventPattern: { source: events.Match.prefix('kiln.') },
        retention: Duration.days(retentionDays),
      });
      this.archive.applyRemovalPolicy(RemovalPolicy.DESTROY);
    }
  }
}
