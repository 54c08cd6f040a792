import { appendFile, mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { EventPublisher, KilnEvent } from '../core/events.ts';

/** An EventBridge-style pattern: every listed field must match one of the listed values. */
export interface EventPattern {
  source?: string[];
  detailType?: string[];
}

type Listener = (event: KilnEvent) => void | Promise<void>;

/**
 * The local stand-in for EventBridge: same event documents, same pattern matching on source and
 * detail-type, delivered in process; every event is also appended to a JSONL log under the home.
 */
export class LocalEventBus implements EventPublisher {
  private readonly rules: Array<{ pattern: EventPattern; listener: Listener }> = [];
  private readonly pending = new Set<Promise<void>>();

  constructor(private readonly logFile?: string) {}

  /** Subscribes a listener to events matching the pattern; returns an unsubscribe function. */
  subscribe(pattern: EventPattern, listener: Listener): () => void {
    const rule = { pattern, listener };
    this.rules.push(rule);
    return () => {
      const index = this.rules.indexOf(rule);
      if (index >= 0) this.rules.splice(index, 1);
    };
  }

  async publish(events: KilnEvent[]): Promise<void> {
    for (const raw of events) {
      const event = { ...raw, time: raw.time ?? new Date().toISOString() };
      if (this.logFile) {
        await mkdir(dirname(this.logFile), { recursive: true });
        await appendFile(this.logFile, `${JSON.stringify(event)}\n`);
      }
      for (const { pattern, listener } of [...this.rules]) {
        if (!matches(pattern, event)) continue;
        // Delivery is asynchronous, as on EventBridge: a slow subscriber never blocks the publisher.
        const delivery = Promise.resolve()
          .then(() => listener(event))
          .catch((error: unknown) => {
            process.emitWarning(`event listener failed for ${event.detailType}: ${String(error)}`);
          })
          .finally(() => this.pending.delete(delivery));
        this.pending.add(delivery);
      }
    }
  }

  /** Resolves when every delivery started so far has finished (tests and `--once` runs use it). */
  async drain(): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending]);
  }
}

function matches(pattern: EventPattern, event: KilnEvent): boolean {
  if (pattern.source && !pattern.source.includes(event.source)) return false;
  if (pattern.detailType && !pattern.detailType.includes(event.detailType)) return false;
  return true;
}
