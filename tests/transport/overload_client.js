// A Node.js client (@grpc/grpc-js, @grpc/proto-loader) for tests/transport/test_overload_codes.py: what a caller in
// another language sees of overload, and whether the published service config's retry policy works there as well.
//
//     node overload_client.js REPO TARGET burst N
//         N GetServerInfo calls at once; prints "answered" when the first one comes back, then
//         {"outcomes": {"CODE \"details\" [marks]": count}} once all have (marks: the trailers among x-request-id,
//         grpc-status-details-bin, grpc-retry-pushback-ms; "OK" for a success).
//     node overload_client.js REPO TARGET scenarios SERVICE_CONFIG SCENARIO...
//         one call per scenario (metadata x-scenario and x-call "node-SCENARIO") on a channel using the service
//         config; prints {"outcomes": {scenario: "OK" or the code's name}}.
"use strict";

const fs = require("fs");
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const [repo, target, mode, ...rest] = process.argv.slice(2);
const definition = protoLoader.loadSync(["embedsvc/v1/server.proto"], {
  includeDirs: [path.join(repo, "protos"), path.join(repo, "third_party", "protos")],
  keepCase: true,
  defaults: true,
});
const v1 = grpc.loadPackageDefinition(definition).embedsvc.v1;
const codeName = (code) => Object.keys(grpc.status).find((name) => grpc.status[name] === code);

function outcome(error) {
  if (!error) return "OK";
  const marks = ["x-request-id", "grpc-status-details-bin", "grpc-retry-pushback-ms"].filter(
    (key) => error.metadata && error.metadata.get(key).length,
  );
  return `${codeName(error.code)} "${error.details}" [${marks.join(", ")}]`;
}

function call(client, metadata) {
  return new Promise((resolve) =>
    client.GetServerInfo({}, metadata, { deadline: Date.now() + 30_000 }, (error) => resolve(error)),
  );
}

async function burst(n) {
  const client = new v1.ServerService(target, grpc.credentials.createInsecure());
  const outcomes = {};
  let first = true;
  await Promise.all(
    Array.from({ length: n }, () =>
      call(client, new grpc.Metadata()).then((error) => {
        if (first) {
          first = false;
          process.stdout.write("answered\n");
        }
        const key = outcome(error);
        outcomes[key] = (outcomes[key] || 0) + 1;
      }),
    ),
  );
  return { outcomes };
}

async function scenarios(config, names) {
  const options = { "grpc.service_config": fs.readFileSync(config, "utf8") };
  const client = new v1.ServerService(target, grpc.credentials.createInsecure(), options);
  const outcomes = {};
  for (const name of names) {
    const metadata = new grpc.Metadata();
    metadata.set("x-scenario", name);
    metadata.set("x-call", `node-${name}`);
    const error = await call(client, metadata);
    outcomes[name] = error ? codeName(error.code) : "OK";
  }
  return { outcomes };
}

(mode === "burst" ? burst(Number(rest[0])) : scenarios(rest[0], rest.slice(1))).then((result) => {
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exit(0);
});
