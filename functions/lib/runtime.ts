import { Logger } from '@aws-lambda-powertools/logger';
import { EventBridgePublisher } from '../../lib/core/eventbridge-publisher.ts';
import { discardEvents, type EventPublisher, localEventPublisher } from '../../lib/core/events.ts';

/** Shared by every handler: one structured logger per function, service name from POWERTOOLS_SERVICE_NAME. */
export const logger = new Logger({ serviceName: process.env.POWERTOOLS_SERVICE_NAME ?? 'kiln' });

/** Events go to the local bus when the local runtime set one, else to the EventBridge bus in KILN_EVENT_BUS. */
export function eventsFromEnv(): EventPublisher {
  const local = localEventPublisher();
  if (local) return local;
  const bus = process.env.KILN_EVENT_BUS;
  return bus ? new EventBridgePublisher(bus) : discardEvents;
}

/** Reads a required environment variable once, at module load, and fails loudly when it is missing. */
export function requireEnv(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`environment variable ${name} is required`);
  return value;
}
