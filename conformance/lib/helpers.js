'use strict';
// Shared helpers for the conformance suite: emulator connection info, the operator
// REST API, key derivation, provisioning, hub clients, certificates and bounded waits.
// Provisioning and hub helpers take a transport from lib/transports.js (`tr`), so every
// scenario runs unchanged over MQTT, MQTT over WebSockets, AMQP and AMQP over WebSockets.
//
// The suite talks to a running cmd/iotc-emulator whose connection info is in the JSON
// file named by IOTC_EMULATOR_INFO. The Azure SDK itself is used unchanged: it trusts the
// emulator's CA only through NODE_EXTRA_CA_CERTS, exactly as a real device trusts Azure's
// public roots. run.sh sets both variables.

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const https = require('node:https');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');

const { Client, Message } = require('azure-iot-device');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
const { X509Security } = require('azure-iot-security-x509');
const { TRANSPORTS } = require('./transports');

/** Default bound for any single wait in a scenario; each test also has its own timeout. */
const WAIT_MS = 20000;

/** Per-test timeout: a hang fails the test instead of blocking the run. */
const TEST_TIMEOUT_MS = 30000;

const INFO_FIELDS = ['idScope', 'groupKey', 'caFile', 'restUrl', 'apiToken', 'mqttAddr', 'hubHost', 'provisioningHost'];

let cachedInfo;

/** Reads and validates the emulator info file named by IOTC_EMULATOR_INFO. */
function loadInfo() {
  if (cachedInfo) return cachedInfo;
  const file = process.env.IOTC_EMULATOR_INFO;
  if (!file) {
    throw new Error('IOTC_EMULATOR_INFO is not set: run the suite through conformance/run.sh, ' +
      'or start `iotc-emulator --info-file PATH` and export IOTC_EMULATOR_INFO=PATH');
  }
  const info = JSON.parse(fs.readFileSync(file, 'utf8'));
  for (const f of INFO_FIELDS) {
    if (typeof info[f] !== 'string' || info[f] === '') {
      throw new Error(`emulator info file ${file}: field "${f}" is missing or not a non-empty string`);
    }
  }
  // Every selected transport needs its listener, on the port the SDK dials (it has no
  // port option): 8883, 443 or 5671.
  for (const tr of TRANSPORTS) {
    const addr = info[tr.infoAddr];
    if (typeof addr !== 'string' || addr === '' || addr === '-') {
      throw new Error(`emulator info file ${file}: field "${tr.infoAddr}" is missing, so the ${tr.title} ` +
        'scenarios cannot run (start the emulator with its WebSocket and AMQP listeners, or narrow ' +
        'IOTC_CONFORMANCE_TRANSPORTS)');
    }
    const port = Number(addr.slice(addr.lastIndexOf(':') + 1));
    if (port !== tr.port) {
      throw new Error(`emulator info file ${file}: ${tr.infoAddr} ${addr} is not on port ${tr.port}, the only ` +
        `port the SDK's ${tr.title} transport dials`);
    }
  }
  const extra = process.env.NODE_EXTRA_CA_CERTS;
  if (!extra || path.resolve(extra) !== path.resolve(info.caFile)) {
    throw new Error('NODE_EXTRA_CA_CERTS must name the emulator CA file (info.caFile) so the Azure SDK trusts ' +
      'the emulator; it is read when node starts, so set it before running `node --test`');
  }
  info.ca = fs.readFileSync(info.caFile);
  cachedInfo = info;
  return info;
}

/** A device/registration id unique to this run: lowercase, digits and '-', as DPS allows. */
function uniqueId(prefix) {
  return `${prefix}-${crypto.randomBytes(5).toString('hex')}`;
}

/** derivedKey = base64(HMAC-SHA256(key = base64decode(groupKey), data = registrationId)). */
function deriveKey(groupKey, registrationId) {
  return crypto.createHmac('sha256', Buffer.from(groupKey, 'base64'))
    .update(registrationId, 'utf8')
    .digest('base64');
}

/**
 * Calls the operator REST API. Returns {status, body, text}; body is the parsed JSON or
 * undefined when the answer is empty or not JSON. Never logs the token.
 */
/** The IoT Central data-plane API version the emulator serves. */
const API_VERSION = '2022-07-31';

function rest(method, urlPath, payload, { auth = true, timeoutMs = WAIT_MS } = {}) {
  const info = loadInfo();
  const url = new URL(urlPath, info.restUrl.endsWith('/') ? info.restUrl : info.restUrl + '/');
  // IoT Central requires api-version on every operation; the emulator serves 2022-07-31.
  if (!url.searchParams.has('api-version')) url.searchParams.set('api-version', API_VERSION);
  const data = payload === undefined ? undefined : Buffer.from(JSON.stringify(payload));
  const headers = { Accept: 'application/json' };
  if (auth) headers.Authorization = info.apiToken;
  if (data) {
    headers['Content-Type'] = 'application/json';
    headers['Content-Length'] = data.length;
  }
  return new Promise((resolve, reject) => {
    const req = https.request(url, { method, headers, ca: info.ca, timeout: timeoutMs }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body;
        try { body = text ? JSON.parse(text) : undefined; } catch { body = undefined; }
        resolve({ status: res.statusCode, body, text });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`REST ${method} ${url.pathname} timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

/** Like rest(), and asserts a 2xx status; returns the parsed body. */
async function restOk(method, urlPath, payload, expectStatus) {
  const res = await rest(method, urlPath, payload);
  const want = expectStatus === undefined ? 'a 2xx status' : `status ${expectStatus}`;
  const ok = expectStatus === undefined ? res.status >= 200 && res.status < 300 : res.status === expectStatus;
  assert.ok(ok, `REST ${method} ${urlPath}: want ${want}, got ${res.status}: ${res.text.slice(0, 500)}`);
  return res.body;
}

/**
 * Polls a REST GET until check(body) returns true (the emulator applies device traffic
 * asynchronously and REST offers no signal). Fails with the last answer after ms.
 */
async function pollRest(urlPath, check, what, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await rest('GET', urlPath);
    if (last.status >= 200 && last.status < 300 && last.body !== undefined && check(last.body)) return last.body;
    if (Date.now() >= deadline) {
      assert.fail(`REST GET ${urlPath}: ${what} not seen within ${ms} ms; last answer ${last.status}: ${last.text.slice(0, 500)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * The SDK's subscribe-like operations (enableMethods, enableC2D,
 * enableTwinDesiredPropertiesUpdates) run in the background when a listener is added; the
 * public API gives no completion signal. Each hub client opened here uses a subclass of
 * the SDK transport that only records those calls and when their callbacks run, so
 * syncSubscriptions() can wait for them. The SDK's behaviour is unchanged.
 *
 * Per operation, the first successful callback counts: the SDK calls enableMethods once per
 * onDeviceMethod(), and over AMQP only the first of several overlapping calls ever gets its
 * callback (the method link state machine drops `attach` while it is attaching).
 */
const enablesByClient = new WeakMap();

const ENABLE_OPS = ['enableMethods', 'enableC2D', 'enableTwinDesiredPropertiesUpdates'];

function trackingTransport(Base, enables) {
  const track = (op, callback) => {
    const entry = enables.get(op) || { calls: 0, errors: [], waiters: [], ok: false };
    enables.set(op, entry);
    entry.calls++;
    return (err, ...rest) => {
      if (err) entry.errors.push(err);
      else entry.ok = true;
      for (const w of entry.waiters.splice(0)) w();
      if (callback) callback(err, ...rest);
    };
  };
  return class TrackingTransport extends Base {
    enableMethods(callback) { return super.enableMethods(track('enableMethods', callback)); }
    enableC2D(callback) { return super.enableC2D(track('enableC2D', callback)); }
    enableTwinDesiredPropertiesUpdates(callback) {
      return super.enableTwinDesiredPropertiesUpdates(track('enableTwinDesiredPropertiesUpdates', callback));
    }
  };
}

/** Client.fromConnectionString over transport tr, remembering the transport's enable calls. */
function hubClient(tr, connectionString) {
  const enables = new Map();
  const client = Client.fromConnectionString(connectionString, trackingTransport(tr.Device, enables));
  enablesByClient.set(client, enables);
  return client;
}

/**
 * ModuleClient.fromConnectionString over transport tr, remembering the transport's enable
 * calls as hubClient does, so that syncSubscriptions works for modules too.
 */
function moduleClient(tr, connectionString) {
  const { ModuleClient } = require('azure-iot-device');
  const enables = new Map();
  const client = ModuleClient.fromConnectionString(connectionString, trackingTransport(tr.Device, enables));
  enablesByClient.set(client, enables);
  return client;
}

/** Resolves when op has succeeded once; rejects when every call of op so far has failed. */
function enabled(op, entry) {
  return new Promise((resolve, reject) => {
    const check = () => {
      if (entry.ok) return resolve();
      if (entry.errors.length >= entry.calls) {
        const e = entry.errors[entry.errors.length - 1];
        return reject(new Error(`${op} failed: ${(e && (e.message || e.name)) || e}`));
      }
      entry.waiters.push(check);
    };
    check();
  });
}

/**
 * Makes sure every subscription the SDK has started so far has reached the hub: first the
 * SDK's own enable* callbacks (MQTT: SUBACK; AMQP: links attached and, for desired
 * properties, the twin PUT answered), then a telemetry message acknowledged by the hub.
 * Over MQTT the acknowledgement alone already orders things (one connection keeps its
 * packets in order); over AMQP the method and twin links are attached one after another,
 * so only the callbacks say when they are in place.
 */
async function syncSubscriptions(client) {
  const enables = enablesByClient.get(client) || new Map();
  const waits = ENABLE_OPS.filter((op) => enables.has(op)).map((op) => enabled(op, enables.get(op)));
  await withTimeout(Promise.all(waits), WAIT_MS, 'the SDK subscriptions (enable* callbacks)');
  const msg = new Message(JSON.stringify({ conformanceSync: 1 }));
  msg.contentType = 'application/json';
  msg.contentEncoding = 'utf-8';
  await withTimeout(client.sendEvent(msg), WAIT_MS, 'sync telemetry acknowledgement');
}

/** Rejects with a clear message when promise does not settle within ms. */
function withTimeout(promise, ms, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

/**
 * Waits for the first `event` on emitter whose arguments satisfy predicate; resolves with
 * the arguments array. The listener is removed afterwards.
 */
function waitForEvent(emitter, event, predicate = () => true, ms = WAIT_MS) {
  let listener;
  const p = new Promise((resolve) => {
    listener = (...args) => { if (predicate(...args)) resolve(args); };
    emitter.on(event, listener);
  });
  return withTimeout(p, ms, `event '${event}'`).finally(() => emitter.removeListener(event, listener));
}

/** Registers through DPS over transport tr with a symmetric key and an optional {modelId} payload. */
async function provisionWithKey(tr, registrationId, key, payload, { waitMs = WAIT_MS } = {}) {
  const info = loadInfo();
  const security = new SymmetricKeySecurityClient(registrationId, key);
  const client = ProvisioningDeviceClient.create(info.provisioningHost, info.idScope, new tr.Provisioning(), security);
  if (payload !== undefined) client.setProvisioningPayload(payload);
  return withTimeout(client.register(), waitMs, `DPS registration of ${registrationId} over ${tr.title}`);
}

/** Registers through DPS over transport tr with an X.509 certificate {cert, key}. */
async function provisionWithX509(tr, registrationId, x509, payload, { waitMs = WAIT_MS } = {}) {
  const info = loadInfo();
  const security = new X509Security(registrationId, x509);
  const client = ProvisioningDeviceClient.create(info.provisioningHost, info.idScope, new tr.Provisioning(), security);
  if (payload !== undefined) client.setProvisioningPayload(payload);
  return withTimeout(client.register(), waitMs, `DPS X.509 registration of ${registrationId} over ${tr.title}`);
}

/** The DPS SAS token the SDK's symmetric-key security client makes for registrationId. */
async function dpsSasToken(registrationId, key) {
  const sas = await new SymmetricKeySecurityClient(registrationId, key).createSharedAccessSignature(loadInfo().idScope);
  return sas.toString();
}

/**
 * Provisions a fresh device over transport tr with a key derived from the emulator's
 * group key. The result remembers tr, so openSasClient connects over the same protocol.
 */
async function provisionDevice(tr, prefix, modelId) {
  const info = loadInfo();
  const deviceId = uniqueId(prefix);
  const key = deriveKey(info.groupKey, deviceId);
  const result = await provisionWithKey(tr, deviceId, key, modelId ? { modelId } : undefined);
  assert.equal(result.deviceId, deviceId, 'DPS assigned device id');
  assert.equal(result.assignedHub, info.hubHost, 'DPS assigned hub');
  return { tr, deviceId, key, hub: result.assignedHub, modelId, result };
}

/**
 * Opens a hub client with the connection string form
 * HostName=...;DeviceId=...;SharedAccessKey=... over dev.tr. Call close() on the result.
 * The model id is set as an option on every transport; only the MQTT transports send it
 * (the SDK's AMQP transport has no model-id field), the emulator knows it from DPS anyway.
 */
async function openSasClient(dev, { onBeforeOpen } = {}) {
  const cs = `HostName=${dev.hub};DeviceId=${dev.deviceId};SharedAccessKey=${dev.key}`;
  const client = hubClient(dev.tr, cs);
  if (dev.modelId) await client.setOptions({ modelId: dev.modelId });
  if (onBeforeOpen) onBeforeOpen(client);
  await withTimeout(client.open(), WAIT_MS, `hub connection of ${dev.deviceId} over ${dev.tr.title}`);
  return client;
}

/** Opens a hub client over transport tr authenticated with an X.509 certificate {cert, key}. */
async function openX509Client(tr, hub, deviceId, x509) {
  const client = hubClient(tr, `HostName=${hub};DeviceId=${deviceId};x509=true`);
  await client.setOptions(x509);
  await withTimeout(client.open(), WAIT_MS, `X.509 hub connection of ${deviceId} over ${tr.title}`);
  return client;
}
/**
 * rhea and ws exactly as the SDK's AMQP transports load them (resolved from
 * azure-iot-amqp-base, so the copies pinned by package-lock.json).
 */
function sdkAmqpModule(name) {
  const base = path.dirname(require.resolve('azure-iot-amqp-base/package.json'));
  return require(require.resolve(name, { paths: [base] }));
}

/**
 * Asks the emulator's DPS over AMQP (transport tr: TLS 5671, or WebSockets 443 with
 * subprotocol AMQPWSB10) the way the SDK does, with rhea directly, to see how it refuses
 * credentials the SDK cannot report precisely. `sas` makes rhea use SASL PLAIN with
 * username {idScope}/registrations/{id} (as azure-iot-provisioning-device-amqp does);
 * `x509` {cert, key} sends a TLS client certificate. Once the connection is open it
 * attaches a receiver to {idScope}/registrations/{id}.
 *
 * Resolves {stage, condition, description}: stage "connection" (refused before or at open,
 * e.g. a SASL outcome), "link" (the attach was refused with a detach error), "accepted"
 * (the link was attached: not a refusal) or "disconnected" (the socket ended without an
 * AMQP error). Never logs the token.
 */
function dpsAmqpProbe(tr, registrationId, { sas, x509 } = {}) {
  const info = loadInfo();
  const rhea = sdkAmqpModule('rhea');
  const container = rhea.create_container();
  const address = `${info.idScope}/registrations/${registrationId}`;
  const tls = { ca: info.ca, ...(x509 ? { cert: x509.cert, key: x509.key } : {}) };
  const opts = {
    host: info.provisioningHost, hostname: info.provisioningHost, port: tr.port, transport: 'tls',
    reconnect: false, ...tls,
  };
  if (sas) {
    opts.username = address;
    opts.password = sas;
  }
  if (tr.infoAddr === 'webSocketAddr') {
    const ws = container.websocket_connect(sdkAmqpModule('ws'));
    opts.connection_details = ws(`wss://${info.provisioningHost}:${tr.port}/$iothub/websocket`, 'AMQPWSB10', tls);
  }
  container.on('error', () => {}); // rhea raises unhandled link errors on the container
  let conn;
  const result = new Promise((resolve) => {
    const done = (stage, err) => resolve({
      stage,
      condition: err && err.condition,
      description: err && err.description,
    });
    conn = container.connect(opts);
    conn.on('connection_open', () => conn.open_receiver({ source: { address }, autoaccept: false }));
    conn.on('receiver_open', (ctx) => {
      // A refusal is an attach answer with a null source, followed by a detach with the
      // error (rhea keeps the null as a typed value).
      const remote = ctx.receiver.remote.attach;
      const src = remote && remote.source;
      const isNull = src === null || src === undefined || (src.type && src.type.name === 'Null');
      if (!isNull) done('accepted');
    });
    conn.on('receiver_close', () => done('link', { condition: undefined, description: 'detached without an error' }));
    conn.on('receiver_error', (ctx) => done('link', ctx.receiver.error));
    conn.on('connection_error', (ctx) => done('connection', ctx.error || ctx.connection.error));
    conn.on('error', (ctx) => done('connection', ctx.error || ctx));
    conn.on('disconnected', (ctx) => done('disconnected', ctx.error && { condition: ctx.error.code, description: ctx.error.message }));
  });
  return withTimeout(result, WAIT_MS, `AMQP DPS probe of ${registrationId} over ${tr.title}`).finally(() => {
    try { conn.close(); } catch { /* already closed */ }
    conn.removeAllListeners();
    conn.on('error', () => {});
    conn.on('disconnected', () => {});
  });
}

/** Closes a client, bounded, never throwing (used in cleanup). */
async function closeQuietly(client) {
  if (!client) return;
  try {
    await withTimeout(client.close(), 10000, 'client close');
  } catch {
    // cleanup must not mask the test's own failure
  }
  client.removeAllListeners();
}

/**
 * Makes a CA and a device leaf certificate (CN = commonName, clientAuth) with the openssl
 * CLI in a temporary directory. Returns PEM strings {caCert, caKey, cert, key, dir}.
 */
function makeCertificates(commonName) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iotc-conf-x509-'));
  const p = (f) => path.join(dir, f);
  const run = (args) => execFileSync('openssl', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  fs.writeFileSync(p('ca.ext'), [
    'basicConstraints=critical,CA:TRUE',
    'keyUsage=critical,keyCertSign,cRLSign,digitalSignature',
    'subjectKeyIdentifier=hash',
    '',
  ].join('\n'));
  fs.writeFileSync(p('leaf.ext'), [
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature,keyEncipherment',
    'extendedKeyUsage=clientAuth',
    'subjectKeyIdentifier=hash',
    'authorityKeyIdentifier=keyid,issuer',
    '',
  ].join('\n'));
  run(['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', p('ca.key')]);
  run(['req', '-new', '-key', p('ca.key'), '-subj', `/CN=iotc conformance CA ${path.basename(dir)}`, '-out', p('ca.csr')]);
  run(['x509', '-req', '-in', p('ca.csr'), '-signkey', p('ca.key'), '-days', '2', '-sha256',
    '-extfile', p('ca.ext'), '-out', p('ca.pem')]);
  run(['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', p('device.key')]);
  run(['req', '-new', '-key', p('device.key'), '-subj', `/CN=${commonName}`, '-out', p('device.csr')]);
  run(['x509', '-req', '-in', p('device.csr'), '-CA', p('ca.pem'), '-CAkey', p('ca.key'), '-set_serial',
    '0x' + crypto.randomBytes(8).toString('hex'), '-days', '2', '-sha256', '-extfile', p('leaf.ext'), '-out', p('device.pem')]);
  const read = (f) => fs.readFileSync(p(f), 'utf8');
  return { dir, caCert: read('ca.pem'), caKey: read('ca.key'), cert: read('device.pem'), key: read('device.key') };
}

module.exports = {
  TRANSPORTS,
  WAIT_MS,
  TEST_TIMEOUT_MS,
  loadInfo,
  uniqueId,
  deriveKey,
  rest,
  restOk,
  pollRest,
  syncSubscriptions,
  withTimeout,
  waitForEvent,
  provisionWithKey,
  dpsAmqpProbe,
  dpsSasToken,
  provisionWithX509,
  provisionDevice,
  openSasClient,
  moduleClient,
  openX509Client,
  closeQuietly,
  makeCertificates,
};
