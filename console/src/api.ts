// The transport every page uses: gRPC-Web (binary) to the server that served the page, with the
// token of the session (sessionStorage) as `authorization: Bearer`, so the console sees and does
// exactly what that principal may.
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import type { DescService } from "@bufbuild/protobuf";

const TokenKey = "conduit.token";

export function token(): string {
  return sessionStorage.getItem(TokenKey) ?? "";
}

export function setToken(value: string): void {
  if (value) sessionStorage.setItem(TokenKey, value);
  else sessionStorage.removeItem(TokenKey);
}

/** The request headers a call needs: the bearer token, if any. */
export function authHeaders(): Record<string, string> {
  const t = token();
  return t ? { authorization: `Bearer ${t}` } : {};
}

const auth: Interceptor = (next) => async (req) => {
  for (const [k, v] of Object.entries(authHeaders())) req.header.set(k, v);
  return next(req);
};

const transport = createGrpcWebTransport({
  baseUrl: location.origin,
  useBinaryFormat: true,
  interceptors: [auth],
});

export function client<T extends DescService>(service: T): Client<T> {
  return createClient(service, transport);
}

/** Says what went wrong, starting with the gRPC status name (PERMISSION_DENIED, UNAUTHENTICATED...). */
export function describeError(e: unknown): string {
  if (e instanceof ConnectError) {
    const name = codeName(e.code);
    const hint =
      e.code === Code.PermissionDenied ? " — this principal (token or client certificate) may not do this" :
      e.code === Code.Unauthenticated ? " — log in with a valid token" : "";
    return `${name}: ${e.rawMessage}${hint}`;
  }
  if (e instanceof Error) return e.message;
  return String(e);
}

/** PERMISSION_DENIED or UNAUTHENTICATED: asking again with the same token will not help. */
export function isDenied(e: unknown): boolean {
  return e instanceof ConnectError && (e.code === Code.PermissionDenied || e.code === Code.Unauthenticated);
}

export function isCancel(e: unknown): boolean {
  return e instanceof ConnectError && e.code === Code.Canceled;
}

const codeNames: Record<number, string> = {
  0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
  6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION", 10: "ABORTED",
  11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED", 13: "INTERNAL", 14: "UNAVAILABLE", 15: "DATA_LOSS", 16: "UNAUTHENTICATED",
};

export function codeName(code: number): string {
  return codeNames[code] ?? `code ${code}`;
}

/**
 * A client-streaming call whose whole request stream is sent at once, as one gRPC-Web body of
 * length-prefixed messages (fetch cannot stream a request body, and connect-web refuses client
 * streaming for that reason; the server reads the frames as a stream). Answers the one response
 * message, or throws ConnectError with the call's status.
 */
export async function clientStreamAll(path: string, messages: Uint8Array[], headers: Record<string, string> = {}): Promise<Uint8Array> {
  const total = messages.reduce((n, m) => n + 5 + m.length, 0);
  const body = new Uint8Array(total);
  let at = 0;
  for (const m of messages) {
    body[at] = 0;
    new DataView(body.buffer).setUint32(at + 1, m.length);
    body.set(m, at + 5);
    at += 5 + m.length;
  }
  const res = await fetch(path, {
    method: "POST",
    headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1", ...authHeaders(), ...headers },
    body,
  });
  const bytes = new Uint8Array(await res.arrayBuffer());
  let message: Uint8Array | undefined;
  let status = res.headers.get("grpc-status");
  let detail = res.headers.get("grpc-message") ?? "";
  for (let i = 0; i + 5 <= bytes.length; ) {
    const flags = bytes[i];
    const length = new DataView(bytes.buffer, bytes.byteOffset + i + 1, 4).getUint32(0);
    const frame = bytes.subarray(i + 5, i + 5 + length);
    if (flags & 0x80) {
      for (const line of new TextDecoder().decode(frame).split("\r\n")) {
        const colon = line.indexOf(":");
        if (colon < 0) continue;
        const key = line.slice(0, colon).trim().toLowerCase();
        const value = line.slice(colon + 1).trim();
        if (key === "grpc-status") status = value;
        if (key === "grpc-message") detail = decodeURIComponent(value);
      }
    } else {
      message = frame;
    }
    i += 5 + length;
  }
  if (!res.ok) throw new ConnectError(`HTTP ${res.status}`, Code.Unknown);
  if (status !== null && status !== "0") throw new ConnectError(detail, Number(status) as Code);
  if (!message) throw new ConnectError("no response message", Code.Internal);
  return message;
}
