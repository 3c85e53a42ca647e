/**
 * pino, with the paths that could carry a secret redacted wherever they appear in a log
 * object. Nothing logs request bodies; redaction is the second line of defence.
 */
import { pino } from 'pino';

export type Logger = pino.Logger;

export const REDACTED_PATHS = [
  'req.headers.authorization',
  'headers.authorization',
  'authorization',
  '*.authorization',
  'accessToken',
  '*.accessToken',
  'clientSecret',
  '*.clientSecret',
  'pin',
  '*.pin',
  'userPin',
  'soPin',
  '*.userPin',
  '*.soPin',
];

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino({ level, redact: { paths: REDACTED_PATHS, censor: '[redacted]' }, base: { service: 'hsm-signer' } }, destination);
}
