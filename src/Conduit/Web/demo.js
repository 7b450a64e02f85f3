// gRPC-Web from a browser with nothing but fetch: the messages are encoded and decoded by hand
// (the few protobuf fields this page needs), the framing is gRPC-Web's (a flag byte, a 4-byte
// length, the message; a frame with flag 0x80 carries the trailers).
'use strict';

const utf8 = new TextEncoder();
const text = new TextDecoder();

class GrpcError extends Error {
  constructor(code, message) {
    super(`status ${code}${message ? ': ' + message : ''}`);
    this.code = code;
  }
}

// --- protobuf: varints, length-delimited fields, and a reader into {field: [values]} ---
function varint(n) {
  const out = [];
  while (n > 127) { out.push((n % 128) | 128); n = Math.floor(n / 128); }
  out.push(n);
  return out;
}

function stringField(number, value) {
  const bytes = utf8.encode(value);
  return bytes.length ? [number * 8 + 2, ...varint(bytes.length), ...bytes] : [];
}

function uintField(number, value) {
  return value ? [number * 8, ...varint(value)] : [];
}

function decode(bytes) {
  const fields = {};
  let i = 0;
  const readVarint = () => {
    let result = 0, scale = 1, b;
    do { b = bytes[i++]; result += (b & 127) * scale; scale *= 128; } while (b & 128);
    return result;
  };
  while (i < bytes.length) {
    const key = readVarint(), number = Math.floor(key / 8), wire = key & 7;
    let value;
    if (wire === 0) value = readVarint();
    else if (wire === 2) { const n = readVarint(); value = bytes.subarray(i, i + n); i += n; }
    else if (wire === 1) { value = bytes.subarray(i, i + 8); i += 8; }
    else if (wire === 5) { value = bytes.subarray(i, i + 4); i += 4; }
    else throw new Error('unsupported wire type ' + wire);
    (fields[number] ||= []).push(value);
  }
  return fields;
}

// --- gRPC-Web: one request message, any number of response messages, then the status ---
function frame(message) {
  const out = new Uint8Array(5 + message.length);
  new DataView(out.buffer).setUint32(1, message.length);
  out.set(message, 5);
  return out;
}

function parseTrailers(block) {
  const trailers = {};
  for (const line of block.split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) trailers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return trailers;
}

// Yields each response message (decoded fields); throws GrpcError for a status other than OK.
async function* call(path, message, signal) {
  const response = await fetch(path, {
    method: 'POST',
    headers: { 'content-type': 'application/grpc-web+proto', 'accept': 'application/grpc-web+proto', 'x-grpc-web': '1' },
    body: frame(Uint8Array.from(message)),
    signal,
  });
  if (!response.ok) throw new Error(`HTTP ${response.status} from ${path}`);
  // A trailers-only answer (an error before any message) has its status in the headers.
  let status = response.headers.get('grpc-status');
  let detail = response.headers.get('grpc-message');
  const reader = response.body.getReader();
  let buffer = new Uint8Array(0);
  for (;;) {
    while (buffer.length >= 5) {
      const length = new DataView(buffer.buffer, buffer.byteOffset).getUint32(1);
      if (buffer.length < 5 + length) break;
      const flag = buffer[0], payload = buffer.slice(5, 5 + length);
      buffer = buffer.slice(5 + length);
      if (flag & 0x80) {
        const trailers = parseTrailers(text.decode(payload));
        status = trailers['grpc-status'];
        detail = trailers['grpc-message'];
      } else {
        yield decode(payload);
      }
    }
    const { value, done } = await reader.read();
    if (done) break;
    const joined = new Uint8Array(buffer.length + value.length);
    joined.set(buffer);
    joined.set(value, buffer.length);
    buffer = joined;
  }
  if (status !== '0') throw new GrpcError(status == null ? 2 : Number(status), decodeURIComponent(detail || 'no status'));
}

// --- the page ---
const $ = id => document.getElementById(id);

$('hello').addEventListener('submit', async event => {
  event.preventDefault();
  const out = $('greeting');
  out.className = 'out';
  out.textContent = '…';
  try {
    // helloworld.HelloRequest { string name = 1; } -> HelloReply { string message = 1; }
    for await (const reply of call('/helloworld.Greeter/SayHello', stringField(1, $('name').value))) {
      out.textContent = reply[1] ? text.decode(reply[1][0]) : '';
    }
  } catch (error) {
    out.className = 'out error';
    out.textContent = error.message;
  }
});

let following = null;

$('follow').addEventListener('submit', async event => {
  event.preventDefault();
  following?.abort();
  const controller = following = new AbortController();
  const topic = $('topic').value, offset = Number($('offset').value) || 0;
  const status = $('stream-status'), list = $('records');
  list.replaceChildren();
  list.start = offset;
  status.className = 'out';
  status.textContent = `following ${topic ? 'topic ' + topic : 'the default topic'} from offset ${offset}`;
  $('stop').disabled = false;
  try {
    // log.v1.ConsumeRequest { uint64 offset = 1; string topic = 2; }
    // -> ConsumeResponse { Record record = 2; }, Record { bytes value = 1; uint64 offset = 2; }
    for await (const response of call('/log.v1.Log/ConsumeStream', [...uintField(1, offset), ...stringField(2, topic)], controller.signal)) {
      const record = decode(response[2] ? response[2][0] : new Uint8Array(0));
      const item = document.createElement('li');
      item.value = record[2] ? record[2][0] : 0;
      item.textContent = record[1] ? text.decode(record[1][0]) : '';
      list.append(item);
      list.scrollTop = list.scrollHeight;
    }
    status.textContent = 'the stream ended';
  } catch (error) {
    if (controller.signal.aborted) { status.textContent = 'stopped'; return; }
    status.className = 'out error';
    status.textContent = error.message;
  } finally {
    if (following === controller) $('stop').disabled = true;
  }
});

$('stop').addEventListener('click', () => following?.abort());
