/**
 * Requests Node's HTTP parser refuses before Express sees them (headers over 16 KiB, an unknown
 * method, a malformed request line, a request that took too long) still get the error
 * envelope (docs/contract.md) and an X-Request-Id, instead of Node's bare status line. The connection is closed
 * after it: the parser cannot tell where the next request would start.
 */
import { STATUS_CODES, type Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { AppError } from '../errors.js';
import { requestIdFrom } from './request-context.js';

/** The caller's X-Request-Id, read from the raw bytes the parser gave up on (when they hold it). */
function givenRequestId(rawPacket: unknown): string | undefined {
  if (!Buffer.isBuffer(rawPacket)) return undefined;
  return /\r\nx-request-id:[ \t]*([^\r\n]*?)[ \t]*\r\n/i.exec(rawPacket.toString('latin1'))?.[1];
}

function errorFor(code: string | undefined): AppError {
  if (code === 'HPE_HEADER_OVERFLOW') return new AppError('RequestHeaderFieldsTooLarge', 'Request headers are too large');
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return new AppError('RequestTimeout', 'The request took too long to arrive');
  return new AppError('BadRequest', 'The request is not valid HTTP');
}

export function answerClientErrors(server: Server): void {
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) => {
    // Nothing can be answered on a reset socket, or while a response is under way on it (Node's
    // own handler makes the same check on the same field).
    if (error.code === 'ECONNRESET' || !socket.writable || (socket as { _httpMessage?: unknown })._httpMessage) {
      socket.destroy();
      return;
    }
    const appError = errorFor(error.code);
    const reqId = requestIdFrom(givenRequestId((error as { rawPacket?: unknown }).rawPacket));
    const body = JSON.stringify({ reqId, ...appError.envelope() });
    socket.end(
      `HTTP/1.1 ${appError.statusCode} ${STATUS_CODES[appError.statusCode]}\r\n` +
        'Content-Type: application/json; charset=utf-8\r\n' +
        `Content-Length: ${Buffer.byteLength(body)}\r\n` +
        `X-Request-Id: ${reqId}\r\n` +
        'X-Content-Type-Options: nosniff\r\n' +
        'Cache-Control: no-store\r\n' +
        'Connection: close\r\n\r\n' +
        body,
    );
  });
}
