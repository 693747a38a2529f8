// A Node.js client of embedsvc built from protos/ at run time, as the README's "Clients in other languages" shows:
// @grpc/proto-loader for the services, protobufjs for the google.rpc.Status in a failed call's trailer. It makes a
// unary call, reads a server stream and decodes a refusal's details, then prints one JSON object for the test.
//
//     node node_client.js REPO TARGET
"use strict";

const fs = require("fs");
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");

const [repo, target] = process.argv.slice(2);
// protos/ for embedsvc's API, third_party/protos for the google.rpc messages it imports (status.proto) and the
// error details the server sends (error_details.proto).
const includeDirs = [path.join(repo, "protos"), path.join(repo, "third_party", "protos")];

// Every file of the API, as a client of all of it loads them (text.proto and operations.proto import status.proto).
const files = fs.readdirSync(path.join(includeDirs[0], "embedsvc", "v1")).map((name) => `embedsvc/v1/${name}`);
const definition = protoLoader.loadSync(files, {
  includeDirs,
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const v1 = grpc.loadPackageDefinition(definition).embedsvc.v1;
const credentials = grpc.credentials.createInsecure();
const words = new v1.WordService(target, credentials);
const arithmetic = new v1.ArithmeticService(target, credentials);

const rpc = new protobuf.Root();
rpc.resolvePath = (origin, file) => {
  for (const dir of includeDirs) {
    if (fs.existsSync(path.join(dir, file))) return path.join(dir, file);
  }
  return protobuf.util.path.resolve(origin, file); // google/protobuf/*: protobufjs has them built in
};
rpc.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"], { keepCase: true });
const Status = rpc.lookupType("google.rpc.Status");

function deadline() {
  return { deadline: Date.now() + 30_000 };
}

function unary(client, method, request) {
  return new Promise((resolve, reject) =>
    client[method](request, deadline(), (error, response) => (error ? reject(error) : resolve(response))),
  );
}

function stream(call) {
  return new Promise((resolve, reject) => {
    const messages = [];
    call.on("data", (message) => messages.push(message));
    call.on("error", reject);
    call.on("end", () => resolve(messages));
  });
}

// A failed call's google.rpc.Status, from its grpc-status-details-bin trailer, with each detail decoded by its type.
function statusOf(error) {
  const [raw] = error.metadata.get("grpc-status-details-bin");
  const status = Status.decode(raw);
  return {
    code: status.code,
    message: status.message,
    details: status.details.map((any) => {
      const type = rpc.lookupType(any.type_url.slice(any.type_url.lastIndexOf("/") + 1));
      return { type: type.fullName.replace(/^\./, ""), ...type.toObject(type.decode(any.value)) };
    }),
  };
}

async function main() {
  const answer = await unary(arithmetic, "Arithmetic", {
    model: "planted",
    expressions: [{ text: "king - man + woman" }],
    top_n: 3,
  });
  const chunks = await stream(words.ExportWords({ model: "planted", batch_size: 10 }, deadline()));
  let refusal = null;
  try {
    await unary(arithmetic, "Arithmetic", { model: "planted", expressions: [{ text: "king - zzqxv" }] });
  } catch (error) {
    refusal = { grpc_code: error.code, status: statusOf(error) };
  }
  console.log(
    JSON.stringify({
      hits: answer.results[0].hits.map((hit) => hit.word),
      model: answer.provenance.model,
      chunks: chunks.length,
      words: chunks.flatMap((chunk) => chunk.words),
      refusal,
    }),
  );
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
