/**
 * What an EST client presents, read from the request: HTTP Basic credentials (RFC 7617) and a
 * client certificate, either from the TLS connection (mutual TLS on this listener) or from a
 * header a trusted TLS-terminating proxy sets. Nothing here decides whether they are good: the
 * EST service checks the passphrase and the certificate against the store.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { Socket } from 'node:net';

/** The password of an `Authorization: Basic` header; undefined when there is none or it is not Basic. */
export function basicPassword(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const match = /^Basic[ ]+([A-Za-z0-9+/]+={0,2})[ ]*$/i.exec(header);
  if (!match) return undefined;
  const decoded = Buffer.from(match[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  // user-id ":" password; the user name is not used (EST authenticates the passphrase alone).
  return colon < 0 ? undefined : decoded.slice(colon + 1);
}

/**
 * The DER certificate the client presented in the TLS handshake, when this listener speaks TLS
 * and asked for one. The handshake proved the client holds its key; whether the certificate is
 * one to honour is the caller's question.
 */
export function tlsClientCertificate(socket: Socket): Buffer | undefined {
  const tls = socket as Partial<TLSSocket>;
  if (typeof tls.getPeerCertificate !== 'function') return undefined;
  const peer = tls.getPeerCertificate(false);
  return peer && peer.raw && peer.raw.length > 0 ? Buffer.from(peer.raw) : undefined;
}

const PEM = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----/;

/**
 * A client certificate as proxies pass it in a header: URL-encoded PEM (nginx's
 * $ssl_client_escaped_cert, Envoy's XFCC `Cert=`), PEM with its line breaks folded into spaces
 * or tabs, or base64 DER (HAProxy's `ssl_c_der,base64`). Undefined when the value is none of those.
 */
export function certificateFromHeader(headers: IncomingHttpHeaders, name: string): Buffer | undefined {
  const given = headers[name.toLowerCase()];
  const value = Array.isArray(given) ? given[0] : given;
  if (!value || value.length > 16384) return undefined;
  let text = value;
  if (text.includes('%')) {
    try {
      text = decodeURIComponent(text);
    } catch {
      return undefined;
    }
  }
  const pem = PEM.exec(text);
  const base64 = pem ? pem[1]!.replace(/\s/g, '') : text.replace(/\s/g, '');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(base64)) return undefined;
  const der = Buffer.from(base64, 'base64');
  return der.length > 0 ? der : undefined;
}
