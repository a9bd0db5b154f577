#!/usr/bin/env node
// gRPC interop client cases (grpc/grpc doc/interop-test-descriptions.md) on
// @grpc/grpc-js, a second, independent HTTP/2 and gRPC implementation.
//
//   node interop_client.js --server_port=N [--server_host=localhost]
//        [--test_cases=empty_unary,large_unary|all]
//        [--descriptor_set=FILE | --proto_path=/usr/share/grpc-proto]
//
// Prints one JSON line per case: {"case": ..., "ok": true|false, "error": ...}.
// Exits 1 if any case failed.
'use strict';

const assert = require('assert');
const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const args = {};
for (const arg of process.argv.slice(2)) {
  const m = /^--([^=]+)=(.*)$/.exec(arg);
  if (m) args[m[1]] = m[2];
}
const host = args.server_host || 'localhost';
const port = args.server_port;
if (!port) {
  console.error('--server_port is required');
  process.exit(2);
}
const loaderOptions = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };
// The schema: a serialized FileDescriptorSet (the test suite writes puregrpc's built-in
// one), or grpc/testing/test.proto under --proto_path.
const definition = args.descriptor_set
  ? protoLoader.loadFileDescriptorSetFromBuffer(fs.readFileSync(args.descriptor_set), loaderOptions)
  : protoLoader.loadSync('grpc/testing/test.proto', {
    includeDirs: [args.proto_path || process.env.PUREGRPC_GRPC_PROTO || '/usr/share/grpc-proto'],
    ...loaderOptions,
  });
const testing = grpc.loadPackageDefinition(definition).grpc.testing;
const target = `${host}:${port}`;
const GZIP = 2; // grpc.default_compression_algorithm value for gzip
const NO_COMPRESS = 2; // WriteFlags.NoCompress

function newClient(options) {
  return new testing.TestService(target, grpc.credentials.createInsecure(), options || {});
}
let client = newClient();
let gzipClient = newClient({ 'grpc.default_compression_algorithm': GZIP });

const zeros = (n) => Buffer.alloc(n);
const bodyLength = (response) => (response.payload && response.payload.body ? response.payload.body.length : 0);
const deadline = (seconds) => new Date(Date.now() + seconds * 1000);

function unary(c, method, request, metadata, options) {
  return new Promise((resolve, reject) => {
    const result = {};
    const call = c[method](request, metadata || new grpc.Metadata(), options || { deadline: deadline(30) },
      (err, response) => (err ? reject(err) : resolve(Object.assign(result, { response }))));
    call.on('metadata', (md) => { result.initial = md; });
    call.on('status', (status) => { result.status = status; });
  });
}

async function unaryResult(c, method, request, metadata) {
  const result = await unary(c, method, request, metadata);
  // the status event may follow the callback
  if (!result.status) await new Promise((resolve) => setImmediate(resolve));
  return result;
}

function expectCode(promise, code) {
  return promise.then(
    () => { throw new Error(`expected status ${code}, the call succeeded`); },
    (err) => { assert.strictEqual(err.code, code, `expected status ${code}, got ${err.code}: ${err.details}`); return err; });
}

// Collects a response stream: messages, status, initial metadata.
function collect(call) {
  return new Promise((resolve, reject) => {
    const out = { responses: [], initial: null, status: null, error: null };
    call.on('metadata', (md) => { out.initial = md; });
    call.on('data', (r) => out.responses.push(r));
    call.on('error', (e) => { out.error = e; });
    call.on('status', (s) => { out.status = s; resolve(out); });
  });
}

function writeAsync(call, message, flags) {
  // grpc-js reads per-message write flags from write()'s encoding argument;
  // Node's Writable rejects a non-string encoding, so _write is called directly
  // (after the previous write completed, which keeps the stream's order).
  return new Promise((resolve, reject) => {
    if (flags === undefined) {
      call.write(message, (err) => (err ? reject(err) : resolve()));
    } else {
      call._write(message, String(flags), (err) => (err ? reject(err) : resolve()));
    }
  });
}

function nextMessage(call) {
  return new Promise((resolve, reject) => {
    const onData = (r) => { cleanup(); resolve(r); };
    const onError = (e) => { cleanup(); reject(e); };
    const onEnd = () => { cleanup(); reject(new Error('stream ended')); };
    function cleanup() {
      call.removeListener('data', onData); call.removeListener('error', onError); call.removeListener('end', onEnd);
    }
    call.on('data', onData); call.on('error', onError); call.on('end', onEnd);
  });
}

const large = (extra) => Object.assign({ response_size: 314159, payload: { body: zeros(271828) } }, extra || {});
function assertLarge(response) {
  assert.strictEqual(bodyLength(response), 314159);
  assert.ok(response.payload.body.equals(zeros(314159)));
}

const SPECIAL = '\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \u{1f608}\t\n';

const cases = {
  async empty_unary() {
    const { response } = await unary(client, 'EmptyCall', {});
    assert.deepStrictEqual(response, {});
  },
  async large_unary() {
    assertLarge((await unary(client, 'UnaryCall', large())).response);
  },
  async client_compressed_unary() {
    await expectCode(unary(client, 'UnaryCall', large({ expect_compressed: { value: true } })), grpc.status.INVALID_ARGUMENT);
    assertLarge((await unary(gzipClient, 'UnaryCall', large({ expect_compressed: { value: true } }))).response);
    assertLarge((await unary(client, 'UnaryCall', large({ expect_compressed: { value: false } }))).response);
  },
  async server_compressed_unary() {
    // grpc-js does not expose the response's compressed flag: the Python wire test checks it.
    for (const value of [true, false]) {
      assertLarge((await unary(client, 'UnaryCall', large({ response_compressed: { value } }))).response);
    }
  },
  async client_streaming() {
    const result = new Promise((resolve, reject) => {
      const call = client.StreamingInputCall((err, r) => (err ? reject(err) : resolve(r)));
      for (const n of [27182, 8, 1828, 45904]) call.write({ payload: { body: zeros(n) } });
      call.end();
    });
    assert.strictEqual((await result).aggregated_payload_size, 74922);
  },
  async client_compressed_streaming() {
    const probe = new Promise((resolve, reject) => {
      const call = client.StreamingInputCall((err, r) => (err ? reject(err) : resolve(r)));
      call.write({ expect_compressed: { value: true }, payload: { body: zeros(27182) } });
      call.end();
    });
    await expectCode(probe, grpc.status.INVALID_ARGUMENT);
    let call;
    const result = new Promise((resolve, reject) => {
      call = gzipClient.StreamingInputCall((err, r) => (err ? reject(err) : resolve(r)));
    });
    await writeAsync(call, { expect_compressed: { value: true }, payload: { body: zeros(27182) } });
    await writeAsync(call, { expect_compressed: { value: false }, payload: { body: zeros(45904) } }, NO_COMPRESS);
    call.end();
    assert.strictEqual((await result).aggregated_payload_size, 73086);
  },
  async server_streaming() {
    const sizes = [31415, 9, 2653, 58979];
    const out = await collect(client.StreamingOutputCall({ response_parameters: sizes.map((size) => ({ size })) }));
    assert.strictEqual(out.status.code, grpc.status.OK);
    assert.deepStrictEqual(out.responses.map(bodyLength), sizes);
  },
  async server_compressed_streaming() {
    const out = await collect(client.StreamingOutputCall({
      response_parameters: [{ compressed: { value: true }, size: 31415 }, { compressed: { value: false }, size: 92653 }],
    }));
    assert.strictEqual(out.status.code, grpc.status.OK);
    assert.deepStrictEqual(out.responses.map(bodyLength), [31415, 92653]);
  },
  async ping_pong() {
    const pairs = [[31415, 27182], [9, 8], [2653, 1828], [58979, 45904]];
    const call = client.FullDuplexCall();
    const done = collect(call);
    const sizes = [];
    for (const [size, payload] of pairs) {
      const next = nextMessage(call);
      call.write({ response_parameters: [{ size }], payload: { body: zeros(payload) } });
      sizes.push(bodyLength(await next));
    }
    call.end();
    const out = await done;
    assert.strictEqual(out.status.code, grpc.status.OK);
    assert.deepStrictEqual(sizes, pairs.map((p) => p[0]));
    assert.strictEqual(out.responses.length, 4);
  },
  async empty_stream() {
    const call = client.FullDuplexCall();
    const done = collect(call);
    call.end();
    const out = await done;
    assert.strictEqual(out.status.code, grpc.status.OK);
    assert.strictEqual(out.responses.length, 0);
  },
  async timeout_on_sleeping_server() {
    const call = client.FullDuplexCall({ deadline: new Date(Date.now() + 1) });
    const done = collect(call);
    call.write({ payload: { body: zeros(27182) } });
    const out = await done;
    assert.strictEqual(out.status.code, grpc.status.DEADLINE_EXCEEDED);
  },
  async cancel_after_begin() {
    const result = new Promise((resolve) => {
      const call = client.StreamingInputCall((err) => resolve(err));
      call.cancel();
    });
    const err = await result;
    assert.ok(err, 'the call succeeded');
    assert.strictEqual(err.code, grpc.status.CANCELLED);
  },
  async cancel_after_first_response() {
    const call = client.FullDuplexCall();
    const done = collect(call);
    const first = nextMessage(call);
    call.write({ response_parameters: [{ size: 31415 }], payload: { body: zeros(27182) } });
    assert.strictEqual(bodyLength(await first), 31415);
    call.cancel();
    const out = await done;
    assert.strictEqual(out.status.code, grpc.status.CANCELLED);
  },
  async status_code_and_message() { await statusCase('test status message'); },
  async special_status_message() { await statusCase(SPECIAL); },
  async custom_metadata() {
    const md = () => {
      const m = new grpc.Metadata();
      m.set('x-grpc-test-echo-initial', 'test_initial_metadata_value');
      m.set('x-grpc-test-echo-trailing-bin', Buffer.from([0xab, 0xab, 0xab]));
      return m;
    };
    const check = (initial, trailing) => {
      assert.deepStrictEqual(initial.get('x-grpc-test-echo-initial'), ['test_initial_metadata_value']);
      assert.deepStrictEqual(trailing.get('x-grpc-test-echo-trailing-bin'), [Buffer.from([0xab, 0xab, 0xab])]);
    };
    const result = await unaryResult(client, 'UnaryCall', large(), md());
    assertLarge(result.response);
    check(result.initial, result.status.metadata);
    const call = client.FullDuplexCall(md());
    const done = collect(call);
    call.write({ response_parameters: [{ size: 314159 }], payload: { body: zeros(271828) } });
    call.end();
    const out = await done;
    assert.strictEqual(out.status.code, grpc.status.OK);
    assert.deepStrictEqual(out.responses.map(bodyLength), [314159]);
    check(out.initial, out.status.metadata);
  },
  async unimplemented_method() {
    await expectCode(unary(client, 'UnimplementedCall', {}), grpc.status.UNIMPLEMENTED);
  },
  async unimplemented_service() {
    const other = new testing.UnimplementedService(target, grpc.credentials.createInsecure());
    try {
      await expectCode(unary(other, 'UnimplementedCall', {}), grpc.status.UNIMPLEMENTED);
    } finally {
      other.close();
    }
  },
  async rpc_soak() {
    for (let i = 0; i < 10; i++) {
      const start = Date.now();
      assertLarge((await unary(client, 'UnaryCall', large())).response);
      assert.ok(Date.now() - start < 1000, 'iteration slower than 1 s');
    }
  },
  async channel_soak() {
    for (let i = 0; i < 10; i++) {
      const start = Date.now();
      const fresh = newClient({ 'grpc.use_local_subchannel_pool': 1 });
      try {
        assertLarge((await unary(fresh, 'UnaryCall', large())).response);
      } finally {
        fresh.close();
      }
      assert.ok(Date.now() - start < 1000, 'iteration slower than 1 s');
    }
  },
};

async function statusCase(message) {
  const status = { code: 2, message };
  const err = await expectCode(unary(client, 'UnaryCall', { response_status: status }), grpc.status.UNKNOWN);
  assert.strictEqual(err.details, message);
  const call = client.FullDuplexCall();
  const done = collect(call);
  call.write({ response_status: status });
  call.end();
  const out = await done;
  assert.strictEqual(out.status.code, grpc.status.UNKNOWN);
  assert.strictEqual(out.status.details, message);
}

async function main() {
  const wanted = !args.test_cases || args.test_cases === 'all' ? Object.keys(cases) : args.test_cases.split(',');
  let failed = 0;
  for (const name of wanted) {
    const fn = cases[name];
    let line;
    if (!fn) {
      line = { case: name, ok: false, error: 'unknown test case' };
    } else {
      try {
        await Promise.race([fn(), new Promise((_, reject) => setTimeout(() => reject(new Error('timed out after 30 s')), 30000).unref())]);
        line = { case: name, ok: true };
      } catch (err) {
        line = { case: name, ok: false, error: String(err && err.stack ? err.stack : err) };
      }
    }
    if (!line.ok) failed += 1;
    console.log(JSON.stringify(line));
  }
  client.close();
  gzipClient.close();
  process.exit(failed ? 1 : 0);
}

main();
