#!/usr/bin/env node
// An OTLP/HTTP trace receiver for the tests: the peer tt-host exports to.
//
// It decodes every POST /v1/traces with the official OpenTelemetry protobuf
// definitions (the generated ExportTraceServiceRequest of the npm package
// @opentelemetry/otlp-transformer), JSON (application/json, OTLP's JSON
// encoding: hex ids, lowerCamelCase keys) or protobuf (application/x-protobuf),
// and appends what it received to a file, one JSON line per request:
//   {"contentType": "application/json", "request": {...}}   ids as hex, 64-bit integers as strings
//   {"error": "..."}                                         a request it refused (answered 400)
//
// JSON is checked strictly, beyond what a collector must do, so that the test
// catches encoding mistakes: every key must be a field of the official
// message at that place, 64-bit integers must be decimal strings, ids hex of
// the right length.
//
// usage: otlp_peer.js --out FILE [--port N | --listen-fd FD] [--port-file FILE] [--fail-first N]
//   --port 0 (default) picks a free port; the port is written to --port-file.
//   --listen-fd FD listens on an inherited TCP socket the test bound (and kept
//   bound while no peer ran, so that connections were refused and no other
//   process could take the port).
//   --fail-first N answers the first N requests 503 (retry tests).
'use strict';

const fs = require('fs');
const http = require('http');

let root;
try {
    root = require('@opentelemetry/otlp-transformer/build/src/generated/root');
} catch (e) {
    console.error('otlp_peer: the npm packages are missing (run `npm ci` in tests/otlp/peer; ' +
                  `tools/dev setup does): ${e.message}`);
    process.exit(3);
}
const Request = root.opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest;
const Response = root.opentelemetry.proto.collector.trace.v1.ExportTraceServiceResponse;
if (!require('protobufjs/minimal').util.Long) {
    // Without Long, protobufjs turns 64-bit nanosecond times into lossy doubles.
    console.error('otlp_peer: protobufjs has no Long support (the npm package "long" is missing)');
    process.exit(3);
}

const args = {out: null, port: 0, listenFd: null, portFile: null, failFirst: 0};
for (let i = 2; i < process.argv.length; i += 2) {
    const [k, v] = [process.argv[i], process.argv[i + 1]];
    if (v === undefined)
        usage(`${k} needs a value`);
    if (k === '--out') args.out = v;
    else if (k === '--port') args.port = Number(v);
    else if (k === '--listen-fd') args.listenFd = Number(v);
    else if (k === '--port-file') args.portFile = v;
    else if (k === '--fail-first') args.failFirst = Number(v);
    else usage(`unknown argument ${k}`);
}
if (!args.out)
    usage('--out is required');

function usage(why) {
    console.error(`otlp_peer: ${why}\nusage: otlp_peer.js --out FILE [--port N | --listen-fd FD] [--port-file FILE] ` +
                  '[--fail-first N]');
    process.exit(2);
}

function record(obj) {
    fs.appendFileSync(args.out, JSON.stringify(obj) + '\n');
}

const ID_FIELDS = {traceId: 16, spanId: 8, parentSpanId: 8};

// OTLP JSON spells trace and span ids as hex, where protobuf's JSON mapping
// would use base64: turn them into bytes before the generated fromObject.
function hexIdsToBytes(value, path, errors) {
    if (Array.isArray(value))
        return value.map((v, i) => hexIdsToBytes(v, `${path}[${i}]`, errors));
    if (value === null || typeof value !== 'object')
        return value;
    const out = {};
    for (const [k, v] of Object.entries(value)) {
        if (k in ID_FIELDS && typeof v === 'string') {
            const n = ID_FIELDS[k];
            if (k === 'parentSpanId' && v === '') {
                out[k] = Buffer.alloc(0);
            } else if (!new RegExp(`^[0-9a-f]{${2 * n}}$`).test(v)) {
                errors.push(`${path}.${k}: "${v}" is not ${2 * n} lowercase hex digits`);
                out[k] = Buffer.alloc(0);
            } else {
                out[k] = Buffer.from(v, 'hex');
            }
        } else {
            out[k] = hexIdsToBytes(v, `${path}.${k}`, errors);
        }
    }
    return out;
}

// Every key of `input` must be a field of the decoded message (`decoded` is
// toObject with defaults, so every field is there), and a 64-bit integer
// (a string in `decoded`, longs: String) must not be a JSON number.
function strictCheck(input, decoded, path, errors) {
    if (Array.isArray(input)) {
        if (!Array.isArray(decoded)) {
            errors.push(`${path}: an array where the definition has none`);
            return;
        }
        input.forEach((v, i) => strictCheck(v, decoded[i], `${path}[${i}]`, errors));
        return;
    }
    if (input === null || typeof input !== 'object') {
        if (typeof input === 'number' && typeof decoded === 'string' && !Number.isNaN(Number(decoded)))
            errors.push(`${path}: a 64-bit integer as a JSON number (OTLP JSON wants a decimal string)`);
        return;
    }
    if (decoded === null || typeof decoded !== 'object') {
        errors.push(`${path}: an object where the definition has a scalar`);
        return;
    }
    for (const [k, v] of Object.entries(input)) {
        if (!(k in decoded)) {
            errors.push(`${path}.${k}: no such field in the OTLP definition (keys are lowerCamelCase)`);
            continue;
        }
        if (k in ID_FIELDS)
            continue;
        strictCheck(v, decoded[k], `${path}.${k}`, errors);
    }
}

// The decoded request as plain JSON: ids as hex, other bytes as base64.
function normalize(value, key) {
    if (value instanceof Uint8Array)
        return key in ID_FIELDS ? Buffer.from(value).toString('hex') : Buffer.from(value).toString('base64');
    if (Array.isArray(value))
        return value.map((v) => normalize(v, key));
    if (value !== null && typeof value === 'object') {
        const out = {};
        for (const [k, v] of Object.entries(value))
            out[k] = normalize(v, k);
        return out;
    }
    return value;
}

const toObjectOptions = {longs: String, enums: Number, defaults: true, arrays: true};

function decodeJson(body) {
    let input;
    try {
        input = JSON.parse(body.toString('utf8'));
    } catch (e) {
        throw new Error(`not JSON: ${e.message}`);
    }
    const errors = [];
    const withBytes = hexIdsToBytes(input, '$', errors);
    const message = Request.fromObject(withBytes);
    const why = Request.verify(message);
    if (why)
        errors.push(`verify: ${why}`);
    const decoded = Request.toObject(message, toObjectOptions);
    strictCheck(input, decoded, '$', errors);
    if (errors.length)
        throw new Error(errors.join('; '));
    return decoded;
}

let served = 0;
const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
        const body = Buffer.concat(chunks);
        if (req.method !== 'POST' || req.url !== '/v1/traces') {
            res.writeHead(404).end();
            return;
        }
        if (served++ < args.failFirst) {
            res.writeHead(503, {'Content-Type': 'text/plain'}).end('not yet (--fail-first)');
            return;
        }
        const type = (req.headers['content-type'] || '').split(';')[0].trim();
        try {
            let decoded;
            if (type === 'application/json')
                decoded = decodeJson(body);
            else if (type === 'application/x-protobuf')
                decoded = Request.toObject(Request.decode(body), toObjectOptions);
            else {
                res.writeHead(415, {'Content-Type': 'text/plain'}).end(`unsupported content type ${type}`);
                record({error: `unsupported content type ${type}`});
                return;
            }
            record({contentType: type, request: normalize(decoded, '')});
            if (type === 'application/json')
                res.writeHead(200, {'Content-Type': 'application/json'}).end('{}');
            else
                res.writeHead(200, {'Content-Type': 'application/x-protobuf'})
                    .end(Buffer.from(Response.encode(Response.create({})).finish()));
        } catch (e) {
            record({error: e.message});
            res.writeHead(400, {'Content-Type': 'text/plain'}).end(e.message);
        }
    });
});

const onListening = () => {
    const port = server.address().port;
    if (args.portFile) {
        fs.writeFileSync(args.portFile + '.tmp', String(port));
        fs.renameSync(args.portFile + '.tmp', args.portFile);
    }
    console.error(`otlp_peer: listening on 127.0.0.1:${port}`);
};
if (args.listenFd !== null)
    server.listen({fd: args.listenFd}, onListening);
else
    server.listen(args.port, '127.0.0.1', onListening);
for (const sig of ['SIGTERM', 'SIGINT'])
    process.on(sig, () => process.exit(0));  // records are written synchronously: nothing is lost
