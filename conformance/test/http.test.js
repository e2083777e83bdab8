'use strict';
// Scenario 15: the official device SDK's HTTP transport (azure-iot-device-http, pinned)
// against the emulator's device HTTPS API on the hub host (443), unchanged: telemetry, one
// message and a batch, read back through the emulator's telemetry history; cloud-to-device
// messages sent with azure-iothub's Client.send and received by HTTP polling, then abandoned
// (delivered again under a new lock token, its delivery count up), completed (feedback
// Success) and rejected (feedback Rejected); IoT Hub's answers to a bad key and a message
// over 256 KiB. HTTP has no transport variants, so these tests run once.

const test = require('node:test');
const assert = require('node:assert/strict');
const https = require('node:https');
const { Client, Message, SharedAccessSignature } = require('azure-iot-device');
const { Http } = require('azure-iot-device-http');
const { Registry, Client: ServiceClient } = require('azure-iothub');
const h = require('../lib/helpers');

function serviceConnectionString(policy) {
  const cs = h.loadInfo().serviceConnectionStrings && h.loadInfo().serviceConnectionStrings[policy];
  assert.ok(typeof cs === 'string', `info file has the ${policy} connection string`);
  return cs;
}

/** Creates a device with the service SDK; returns its id, key and an HTTP client. */
async function httpDevice(t, prefix) {
  const registry = Registry.fromConnectionString(serviceConnectionString('iothubowner'));
  const deviceId = h.uniqueId(prefix);
  const created = (await registry.create({ deviceId })).responseBody;
  const key = created.authentication.symmetricKey.primaryKey;
  const hub = h.loadInfo().hubHost;
  const client = Client.fromConnectionString(`HostName=${hub};DeviceId=${deviceId};SharedAccessKey=${key}`, Http);
  t.after(async () => {
    await h.closeQuietly(client);
    await registry.delete(deviceId).catch(() => {});
  });
  return { deviceId, key, hub, client };
}

async function history(deviceId, n) {
  return (await h.pollRest(`/api/emulator/devices/${deviceId}/telemetry`, (b) => b.value.length >= n, `${n} messages in the history`)).value;
}

/** Resolves to the error promise rejects with; fails when it resolves. */
async function refused(promise, what) {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  assert.fail(`${what} succeeded; it must be refused`);
}

test('scenario 15: HTTP telemetry, one message and a batch, with properties, and IoT Hub errors', { timeout: h.TEST_TIMEOUT_MS }, async (t) => {
  const dev = await httpDevice(t, 'conf-http');
  const one = new Message(JSON.stringify({ temperature: 21.5 }));
  one.messageId = h.uniqueId('m');
  one.correlationId = 'corr-1';
  one.contentType = 'application/json';
  one.contentEncoding = 'utf-8';
  one.properties.add('color', 'red');
  await dev.client.sendEvent(one);

  const b1 = new Message(JSON.stringify({ n: 1 }));
  b1.properties.add('batch', 'yes');
  const b2 = new Message('plain two');
  await dev.client.sendEventBatch([b1, b2]);

  const got = await history(dev.deviceId, 3);
  assert.equal(got.length, 3, 'one message and a batch of two');
  const [m, x1, x2] = got;
  assert.deepEqual(m.data, { temperature: 21.5 }, 'body');
  assert.equal(m.messageId, one.messageId, 'message id');
  assert.equal(m.correlationId, 'corr-1', 'correlation id');
  assert.equal(m.contentType, 'application/json');
  assert.equal(m.contentEncoding, 'utf-8');
  assert.equal(m.properties.color, 'red', 'application property from its iothub-app- header');
  assert.equal(m.systemProperties['iothub-connection-device-id'], dev.deviceId);
  assert.match(m.systemProperties['iothub-connection-auth-method'], /"type":"sas"/);
  assert.deepEqual(x1.data, { n: 1 }, 'first batch message');
  assert.equal(x1.properties.batch, 'yes', 'batch message property');
  assert.equal(Buffer.from(x2.dataBase64, 'base64').toString(), 'plain two', 'second batch message');

  // A message over 256 KiB: 413, which the SDK maps to MessageTooLargeError.
  const big = await refused(dev.client.sendEvent(new Message(Buffer.alloc(256 * 1024 + 1, 0x61))), 'a message over 256 KiB');
  assert.equal(big.constructor.name, 'MessageTooLargeError', big.message);
  assert.equal(big.response.statusCode, 413);

  // A wrong key: 401, UnauthorizedError.
  const bad = Client.fromConnectionString(`HostName=${dev.hub};DeviceId=${dev.deviceId};SharedAccessKey=${Buffer.alloc(32).toString('base64')}`, Http);
  const unauth = await refused(bad.sendEvent(new Message('x')), 'a message signed with a wrong key');
  assert.equal(unauth.constructor.name, 'UnauthorizedError', unauth.message);
  await h.closeQuietly(bad);
  assert.equal((await history(dev.deviceId, 3)).length, 3, 'refused messages are not kept');

  // The registry shows the HTTP device disconnected (IoT Hub tracks MQTT and AMQP only).
  const registry = Registry.fromConnectionString(serviceConnectionString('iothubowner'));
  assert.equal((await registry.get(dev.deviceId)).responseBody.connectionState, 'Disconnected');
});

/** Raw device HTTPS request (the SDK shows no delivery count): resolves {status, headers, body}. */
function raw(dev, method, path) {
  const se = Math.floor(Date.now() / 1000) + 3600;
  const sas = SharedAccessSignature.create(dev.hub, dev.deviceId, dev.key, se).toString();
  const [host, port] = [h.loadInfo().webSocketAddr.replace(/:\d+$/, ''), +h.loadInfo().webSocketAddr.replace(/^.*:/, '')];
  return new Promise((resolve, reject) => {
    const req = https.request({ host, port, servername: dev.hub, method, path: `${path}?api-version=2021-04-12`, headers: { Authorization: sas } }, (res) => {
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('scenario 15: HTTP cloud-to-device from Client.send, abandon (again, count up), complete and reject with feedback', { timeout: 2 * h.TEST_TIMEOUT_MS }, async (t) => {
  const dev = await httpDevice(t, 'conf-httpc');
  const service = ServiceClient.fromConnectionString(serviceConnectionString('service'));
  t.after(() => service.close().catch(() => {}));
  await service.open();
  const receiver = (await service.getFeedbackReceiver()).result;
  const records = [];
  const waiting = [];
  receiver.on('message', (m) => {
    records.push(...JSON.parse(m.data.toString()));
    receiver.complete(m, () => {});
    waiting.forEach((w) => w());
  });
  const recordOf = (id) => new Promise((resolve) => {
    const check = () => { const r = records.find((x) => x.originalMessageId === id); if (r) resolve(r); };
    waiting.push(check);
    check();
  });

  // The SDK polls GET /devices/{id}/messages/devicebound (every second by default).
  const inbox = [];
  const takers = [];
  dev.client.on('message', (msg) => {
    const w = takers.shift();
    if (w) w(msg); else inbox.push(msg);
  });
  const take = (what) => h.withTimeout(inbox.length ? Promise.resolve(inbox.shift()) : new Promise((r) => takers.push(r)), h.WAIT_MS, what);

  const a = new Message(JSON.stringify({ step: 'a' }));
  a.messageId = h.uniqueId('c2d-a');
  a.correlationId = 'corr-a';
  a.ack = 'full';
  a.properties.add('color', 'green');
  await service.send(dev.deviceId, a);
  const first = await take('message a');
  assert.equal(first.messageId, a.messageId, 'message id');
  assert.equal(first.correlationId, 'corr-a', 'correlation id');
  assert.equal(first.properties.getValue('iothub-app-color'), 'green', 'application property (the SDK keeps the header name)');
  assert.deepEqual(JSON.parse(first.data), { step: 'a' }, 'body');
  assert.ok(first.lockToken, 'the ETag is the lock token');
  await dev.client.abandon(first);

  const again = await take('message a again after the abandon');
  assert.equal(again.messageId, a.messageId, 'the abandoned message comes again');
  assert.notEqual(again.lockToken, first.lockToken, 'under a new lock token');
  await dev.client.complete(again);
  const done = await h.withTimeout(recordOf(a.messageId), h.WAIT_MS, 'feedback of a');
  assert.equal(done.statusCode, 'Success', 'completed: Success');

  // The old lock token is lost: 412.
  const lost = await refused(dev.client.complete(first), 'a complete with the abandoned lock token');
  assert.equal(lost.response.statusCode, 412);

  const b = new Message('reject me');
  b.messageId = h.uniqueId('c2d-b');
  b.ack = 'negative';
  await service.send(dev.deviceId, b);
  const toReject = await take('message b');
  assert.equal(toReject.messageId, b.messageId);
  await dev.client.reject(toReject);
  const rej = await h.withTimeout(recordOf(b.messageId), h.WAIT_MS, 'feedback of b');
  assert.equal(rej.statusCode, 'Rejected', 'rejected: Rejected (dead-lettered)');

  // The delivery count, which the SDK does not show, on the wire.
  await h.closeQuietly(dev.client);
  const c = new Message('count');
  c.messageId = h.uniqueId('c2d-c');
  await service.send(dev.deviceId, c);
  const path = `/devices/${encodeURIComponent(dev.deviceId)}/messages/devicebound`;
  const r1 = await raw(dev, 'GET', path);
  assert.equal(r1.status, 200);
  assert.equal(r1.headers['iothub-messageid'], c.messageId);
  assert.equal(r1.headers['iothub-deliverycount'], '1');
  const lock1 = r1.headers.etag.replace(/"/g, '');
  assert.equal((await raw(dev, 'POST', `${path}/${lock1}/abandon`)).status, 204);
  const r2 = await raw(dev, 'GET', path);
  assert.equal(r2.headers['iothub-messageid'], c.messageId);
  assert.equal(r2.headers['iothub-deliverycount'], '2', 'delivery count up after the abandon');
  assert.equal((await raw(dev, 'DELETE', `${path}/${r2.headers.etag.replace(/"/g, '')}`)).status, 204);
  assert.equal((await raw(dev, 'GET', path)).status, 204, 'the queue is empty');
});
