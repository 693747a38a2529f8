// What a Node.js client (@grpc/grpc-js) sees under overload: Similarity calls at a fixed rate (open loop, 2 s
// deadline) on a channel of their own, each outcome recorded as grpc-js reports it (code, details), with whether its
// trailers carry the server's marks: x-request-id (a handler of embedsvc answered), grpc-status-details-bin (the
// google.rpc.Status with ErrorInfo) and grpc-retry-pushback-ms. With a service config file, the channel uses it (its
// retry policy: then an outcome is what the caller finally gets, after the retries).
// Run by benchmarks/overload.py --node-modules DIR (a folder where npm installed @grpc/grpc-js and
// @grpc/proto-loader); prints one JSON object: {"outcomes": {outcome: count}, "calls": n}.
//
//     node overload_census.js REPO TARGET RATE SECONDS [SERVICE_CONFIG_JSON]
"use strict";

const fs = require("fs");
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const [repo, target, rate, seconds, serviceConfig] = process.argv.slice(2);
const definition = protoLoader.loadSync(["embedsvc/v1/words.proto"], {
  includeDirs: [path.join(repo, "protos"), path.join(repo, "third_party", "protos")],
  keepCase: true,
  defaults: true,
});
const v1 = grpc.loadPackageDefinition(definition).embedsvc.v1;
const options = serviceConfig ? { "grpc.service_config": fs.readFileSync(serviceConfig, "utf8") } : {};
const words = new v1.WordService(target, grpc.credentials.createInsecure(), options);
const request = { model: "words", pairs: [{ first: "one", second: "two" }] };

const outcomes = {};
let calls = 0;
let pending = 0;
let stopped = false;

function outcome(error) {
  if (!error) return "OK";
  const marks = [];
  for (const key of ["x-request-id", "grpc-status-details-bin", "grpc-retry-pushback-ms"]) {
    if (error.metadata && error.metadata.get(key).length) marks.push(key);
  }
  const code = Object.keys(grpc.status).find((name) => grpc.status[name] === error.code);
  return `${code} "${error.details}" [${marks.join(", ") || "no marks"}]`;
}

function call() {
  calls += 1;
  pending += 1;
  words.Similarity(request, { deadline: Date.now() + 2000 }, (error) => {
    const key = outcome(error);
    outcomes[key] = (outcomes[key] || 0) + 1;
    pending -= 1;
    if (stopped && pending === 0) finish();
  });
}

function finish() {
  console.log(JSON.stringify({ calls, outcomes }));
  process.exit(0);
}

const started = Date.now();
const interval = 1000 / Number(rate);
let next = started;
function tick() {
  if (Date.now() - started >= Number(seconds) * 1000) {
    stopped = true;
    if (pending === 0) finish();
    return;
  }
  while (Date.now() >= next) {
    call();
    next += interval;
  }
  setTimeout(tick, Math.max(0, next - Date.now()));
}
tick();
