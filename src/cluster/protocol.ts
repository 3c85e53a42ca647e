/**
 * Messages between the cluster primary and its workers (node:cluster's IPC channel). Every
 * message carries `channel`, so anything else on the channel (node's own, prom-client's) is
 * told apart. Requests carry an id the answer repeats.
 */
import type { MetricObjectWithValues, MetricValue } from 'prom-client';

export const CHANNEL = 'hsm-signer';

export type ToWorker =
  /** The worker's own /healthz or /readyz verdict. */
  | { channel: typeof CHANNEL; type: 'probe'; id: number; probe: 'healthz' | 'readyz' }
  /** The worker's registry as prom-client's JSON, for AggregatorRegistry.aggregate. */
  | { channel: typeof CHANNEL; type: 'metrics'; id: number }
  /** Every listening worker has closed its listener (sent once all said listener-closed). */
  | { channel: typeof CHANNEL; type: 'listeners-closed' };

export type FromWorker =
  /** Sent once, when the worker's API listener is up and its first-start work is done. */
  | { channel: typeof CHANNEL; type: 'listening'; url: string }
  /** problem: undefined (JSON drops it) when the probe passes, else why not. */
  | { channel: typeof CHANNEL; type: 'probe'; id: number; problem?: string }
  | { channel: typeof CHANNEL; type: 'metrics'; id: number; metrics: Array<MetricObjectWithValues<MetricValue<string>>> }
  /**
   * At the end of a shutdown delay: this worker has closed its listener (node:cluster's own
   * message saying so went before this one, on the same channel) and holds its answers until
   * every worker has.
   */
  | { channel: typeof CHANNEL; type: 'listener-closed' };

export function isOurs<T extends { channel: string }>(message: unknown): message is T {
  return typeof message === 'object' && message !== null && (message as { channel?: unknown }).channel === CHANNEL;
}
