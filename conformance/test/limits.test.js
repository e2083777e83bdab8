'use strict';
// Service limits and timers, over every transport: the 256 KiB telemetry limit, the DPS
// retry-after the SDK polls with, and SAS token expiry on connect and while connected.
// Device side: the official SDK (and, where the SDK stops short of the wire, the SDK's
// own MQTT library). Service side: the emulator's telemetry history and device list.

const path = require('node:path');
const test = require('node:test');
const assert = require('node:assert/strict');
const { Client, Message, SharedAccessSignature } = require('azure-iot-device');
const { NoRetry } = require('azure-iot-common');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
const h = require('../lib/helpers');

const LIMIT = 256 * 1024;

/** mqtt.js exactly as the SDK's MQTT transport loads it. */
function sdkMqtt() {
  const base = path.dirname(require.resolve('azure-iot-mqtt-base/package.json'));
  return require(require.resolve('mqtt', { paths: [base] }));
}

function sasFor(dev, secondsFromNow) {
  const se = Math.floor(Date.now() / 1000) + secondsFromNow;
  return { se, token: SharedAccessSignature.create(dev.hub, dev.deviceId, dev.key, se).toString() };
}

async function history(deviceId) {
  return (await h.restOk('GET', `/api/emulator/devices/${deviceId}/telemetry`)).value;
}

for (const tr of h.TRANSPORTS) {
  test(`${tr.prefix}limits: 256 KiB of telemetry is accepted and kept, one byte more is not`, { timeout: h.TEST_TIMEOUT_MS }, async (t) => {
    const dev = await h.provisionDevice(tr, 'conf-size');
    const client = await h.openSasClient(dev);
    t.after(() => h.closeQuietly(client));
    client.setRetryPolicy(new NoRetry());

    const exact = new Message(Buffer.alloc(LIMIT, 'a'));
    exact.messageId = h.uniqueId('exact');
    const sent = await h.withTimeout(client.sendEvent(exact), h.WAIT_MS, '256 KiB telemetry acknowledgement');
    assert.equal(sent.constructor.name, 'MessageEnqueued', 'the hub acknowledged a 256 KiB body');

    const over = new Message(Buffer.alloc(LIMIT + 1, 'a'));
    over.messageId = h.uniqueId('over');
    const err = await h.withTimeout(client.sendEvent(over), h.WAIT_MS, 'the refusal of 256 KiB + 1')
      .then(() => assert.fail('a body of 256 KiB + 1 was acknowledged'), (e) => e);
    if (tr.amqp) {
      // Refused by the hub: amqp:resource-limit-exceeded, which the SDK reports as quota exceeded.
      assert.equal(err.name, 'IotHubQuotaExceededError', `the hub refuses the message: ${err.name}: ${err.message}`);
    } else {
      // The MQTT SDK checks the size itself and never sends it (the hub is probed below).
      assert.equal(err.name, 'MessageTooLargeError', `the SDK refuses the message: ${err.name}: ${err.message}`);
    }

    const kept = await history(dev.deviceId);
    const ids = kept.map((m) => m.messageId);
    assert.ok(ids.includes(exact.messageId), 'the 256 KiB message is in the history');
    assert.ok(!ids.includes(over.messageId), 'the oversized message is not');
    const exactKept = kept.find((m) => m.messageId === exact.messageId);
    assert.equal(Buffer.from(exactKept.dataBase64, 'base64').length, LIMIT, 'the whole 256 KiB body was kept');
  });
}

if (h.TRANSPORTS.some((tr) => tr.id === 'mqtt')) {
  test('limits: the hub closes an MQTT connection that publishes 256 KiB + 1 of telemetry', { timeout: h.TEST_TIMEOUT_MS }, async (t) => {
    const info = h.loadInfo();
    const tr = h.TRANSPORTS.find((x) => x.id === 'mqtt');
    const dev = await h.provisionDevice(tr, 'conf-size-wire');
    const mqtt = sdkMqtt();
    const c = mqtt.connect(`mqtts://${info.hubHost}:8883`, {
      clientId: dev.deviceId,
      username: `${dev.hub}/${dev.deviceId}/?api-version=2021-04-12`,
      password: sasFor(dev, 3600).token,
      protocolVersion: 4, clean: true, reconnectPeriod: 0, ca: info.ca, connectTimeout: h.WAIT_MS,
    });
    t.after(() => c.end(true));
    await h.waitForEvent(c, 'connect');
    const closed = h.waitForEvent(c, 'close');
    let acked = false;
    c.publish(`devices/${dev.deviceId}/messages/events/`, Buffer.alloc(LIMIT + 1, 'a'), { qos: 1 }, (e) => { acked = !e; });
    await closed;
    assert.equal(acked, false, 'the oversized publish was not acknowledged');
    const dv = await h.pollRest(`/api/emulator/devices/${dev.deviceId}/connection`, (b) => b.connected === false, 'the device offline');
    assert.equal(dv.connected, false);
    assert.deepEqual(await history(dev.deviceId), [], 'nothing was kept');
  });
}

for (const tr of h.TRANSPORTS) {
  test(`${tr.prefix}limits: the SDK polls DPS with the retry-after the service sends`, { timeout: h.TEST_TIMEOUT_MS }, async () => {
    const info = h.loadInfo();
    const deviceId = h.uniqueId('conf-retry');
    const key = h.deriveKey(info.groupKey, deviceId);
    // The SDK's transport, unchanged, with its registration and poll answers recorded.
    const answers = [];
    class Recording extends tr.Provisioning {
      registrationRequest(request, callback) {
        return super.registrationRequest(request, (err, result, response, pollingInterval) => {
          answers.push({ op: 'register', err, status: result && result.status, pollingInterval });
          callback(err, result, response, pollingInterval);
        });
      }
      queryOperationStatus(request, operationId, callback) {
        return super.queryOperationStatus(request, operationId, (err, result, response, pollingInterval) => {
          answers.push({ op: 'poll', err, status: result && result.status, pollingInterval });
          callback(err, result, response, pollingInterval);
        });
      }
    }
    const client = ProvisioningDeviceClient.create(info.provisioningHost, info.idScope, new Recording(),
      new SymmetricKeySecurityClient(deviceId, key));
    const result = await h.withTimeout(client.register(), h.WAIT_MS, `DPS registration of ${deviceId}`);
    assert.equal(result.status, 'assigned', 'registration status');
    const reg = answers.find((a) => a.op === 'register');
    assert.ok(reg && !reg.err, `a register answer: ${JSON.stringify(answers)}`);
    assert.equal(reg.status, 'assigning', 'DPS answers the register request 202 assigning');
    // The emulator runs with its default --retry-after 1s; the SDK's own default is 2 s, so
    // 1000 ms can only come from the retry-after the service sent.
    assert.equal(reg.pollingInterval, 1000, `the SDK read retry-after=1 from the register answer: ${JSON.stringify(answers)}`);
    assert.ok(answers.some((a) => a.op === 'poll' && a.status === 'assigned'), 'a poll answered assigned');
  });

  test(`${tr.prefix}limits: an expired SAS token is refused, a live one is cut off when it expires`, { timeout: h.TEST_TIMEOUT_MS }, async (t) => {
    const dev = await h.provisionDevice(tr, 'conf-expiry');

    const expired = Client.fromSharedAccessSignature(sasFor(dev, -60).token, tr.Device);
    expired.setRetryPolicy(new NoRetry());
    const err = await h.withTimeout(expired.open(), h.WAIT_MS, 'the refusal of an expired token')
      .then(() => assert.fail('a connection with an expired token was accepted'), (e) => e);
    assert.equal(err.name, 'UnauthorizedError', `expired token: ${err.name}: ${err.message}`);
    await h.closeQuietly(expired);

    // A token good for a few seconds opens, works, and stops working once it expires
    // (the SDK cannot renew a token it was given).
    const { se, token } = sasFor(dev, 4);
    const client = Client.fromSharedAccessSignature(token, tr.Device);
    t.after(() => h.closeQuietly(client));
    client.setRetryPolicy(new NoRetry());
    client.on('error', () => {});
    const disconnected = tr.amqp ? null : h.waitForEvent(client, 'disconnect');
    await h.withTimeout(client.open(), h.WAIT_MS, 'a connection with a live token');
    await h.withTimeout(client.sendEvent(new Message('{"before":1}')), h.WAIT_MS, 'telemetry before expiry');
    await new Promise((r) => setTimeout(r, Math.max(0, se * 1000 - Date.now()) + 200));
    if (disconnected) {
      // MQTT 3.1.1 cannot re-authenticate: the hub closes the connection at expiry.
      await disconnected;
      await h.pollRest(`/api/emulator/devices/${dev.deviceId}/connection`, (b) => b.connected === false, 'the device offline after expiry');
    }
    // Over AMQP the hub detaches the links whose token expired; a send then fails.
    let last;
    const deadline = Date.now() + h.WAIT_MS;
    for (;;) {
      last = await client.sendEvent(new Message('{"after":1}')).then(() => null, (e) => e);
      if (last || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.ok(last, 'telemetry was still accepted long after the token expired');
    assert.equal(last.name, 'UnauthorizedError', `a send after expiry: ${last.name}: ${last.message}`);
  });
}
