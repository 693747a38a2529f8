// Open-loop load for benchmarks/overload.py: calls WordService.Similarity at a fixed rate over many channels, each
// call with a deadline, whatever the answers; reports the outcome of every call and the latencies of the served ones
// as one JSON line on stdout. Built only from protos/ (as any other-language client would be).
//
//   node loadgen.js --target 127.0.0.1:50051 --rate 6000 --duration 30 --channels 32 --deadline-ms 2000
//   node loadgen.js --target ... --closed 16 --duration 10      (closed loop: 16 callers, each waits for its answer)
"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

function option(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  return at === -1 ? fallback : process.argv[at + 1];
}

const root = path.resolve(__dirname, "..", "..");
const definition = protoLoader.loadSync("embedsvc/v1/words.proto", {
  includeDirs: [path.join(root, "protos"), path.join(root, "third_party", "protos")],
});
const words = grpc.loadPackageDefinition(definition).embedsvc.v1;

const target = option("target");
const rate = Number(option("rate", "1000"));
const duration = Number(option("duration", "10")) * 1000;
const channels = Number(option("channels", "32"));
const deadlineMs = Number(option("deadline-ms", "2000"));
const closed = Number(option("closed", "0"));
const request = { model: "words", pairs: [{ first: "one", second: "two" }] };

// Separate channels: grpc-js shares one connection between clients with the same target and options unless told.
const clients = [];
for (let i = 0; i < channels; i++) {
  clients.push(new words.WordService(target, grpc.credentials.createInsecure(), { "grpc.channel_id": i }));
}

const codes = {};
const latencies = [];
let sent = 0;
let pending = 0;

function call(client, done) {
  const started = process.hrtime.bigint();
  sent++;
  pending++;
  client.Similarity(request, { deadline: Date.now() + deadlineMs }, (error) => {
    pending--;
    const name = error ? grpc.status[error.code] : "OK";
    codes[name] = (codes[name] || 0) + 1;
    if (!error) latencies.push(Number(process.hrtime.bigint() - started) / 1e6);
    if (done) done();
  });
}

function percentile(values, p) {
  if (!values.length) return 0;
  const sorted = Float64Array.from(values).sort();
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function report(elapsedMs) {
  process.stdout.write(
    JSON.stringify({
      sent,
      elapsed: elapsedMs / 1000,
      codes,
      ok_p50_ms: percentile(latencies, 50),
      ok_p99_ms: percentile(latencies, 99),
    }) + "\n",
  );
  for (const client of clients) client.close();
  process.exit(0);
}

function finish(began) {
  const elapsed = Number(process.hrtime.bigint() - began) / 1e6;
  const waitUntil = Date.now() + deadlineMs + 5000;
  const check = () => (pending === 0 || Date.now() > waitUntil ? report(elapsed) : setTimeout(check, 20));
  check();
}

function warmAndRun() {
  let ready = 0;
  for (const client of clients) {
    client.Similarity(request, { deadline: Date.now() + 30000 }, () => {
      if (++ready === clients.length) run();
    });
  }
}

function run() {
  const began = process.hrtime.bigint();
  const end = Date.now() + duration;
  if (closed > 0) {
    let live = closed;
    const loop = (i) => {
      if (Date.now() >= end) {
        if (--live === 0) finish(began);
        return;
      }
      call(clients[i % clients.length], () => loop(i));
    };
    for (let i = 0; i < closed; i++) loop(i);
    return;
  }
  const tick = () => {
    const elapsed = Number(process.hrtime.bigint() - began) / 1e9;
    if (Date.now() >= end) return finish(began);
    const due = Math.floor(elapsed * rate) - sent;
    for (let i = 0; i < due; i++) call(clients[sent % clients.length]);
    setTimeout(tick, 1);
  };
  tick();
}

warmAndRun();
