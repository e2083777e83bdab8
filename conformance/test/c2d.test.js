'use strict';
// Scenario 7, over every transport: a command queued through the REST API for an offline
// device and a plain cloud-to-device message are delivered when the device reconnects (over
// MQTT the SDK connects with clean session 0; over AMQP it attaches the devicebound link),
// carry their properties and body, and are gone once completed. The device takes both
// messages before completing either, as the hub allows several unsettled deliveries.

const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('../lib/helpers');

const MODEL_ID = 'dtmi:iotcgo:conformance:TemperatureController;1';

/** Opens the device with a 'message' listener attached before the connection exists. */
async function openWithInbox(dev) {
  const inbox = [];
  const waiters = [];
  const client = await h.openSasClient(dev, {
    onBeforeOpen: (c) => c.on('message', (msg) => {
      inbox.push(msg);
      for (const w of waiters.splice(0)) w();
    }),
  });
  // Resolves with the first `n` messages received on this connection.
  const take = (n) => h.withTimeout(new Promise((resolve) => {
    const check = () => (inbox.length >= n ? resolve(inbox.slice(0, n)) : waiters.push(check));
    check();
  }), h.WAIT_MS, `${n} cloud-to-device message(s)`).catch((err) => {
    throw new Error(`${err.message}; ${inbox.length} arrived, none completed yet`);
  });
  return { client, inbox, take };
}

function methodNameMatches(value, name) {
  // IoT Central may prefix the name (`prefix:name`); the command name is what follows.
  return value === name || (typeof value === 'string' && value.endsWith(':' + name));
}

for (const tr of h.TRANSPORTS) {
  test(`${tr.prefix}scenario 7: queued command and message reach a device that comes back online`, { timeout: h.TEST_TIMEOUT_MS }, async (t) => {
    const dev = await h.provisionDevice(tr, 'conf-c2d', MODEL_ID);
    const clients = [];
    t.after(() => Promise.all(clients.map((c) => h.closeQuietly(c))));

    // First connection subscribes to cloud-to-device messages, then the device goes offline.
    const first = await openWithInbox(dev);
    clients.push(first.client);
    await h.syncSubscriptions(first.client);
    await h.withTimeout(first.client.close(), h.WAIT_MS, 'close');

    // Emulator extensions (under /api/emulator): queue a command for an offline device, as IoT
    // Central does for a command its template marks "Queue if offline", and send a plain message.
    const base = `/api/emulator/devices/${dev.deviceId}`;
    const request = { firmwareUrl: 'https://example.com/fw/2.0.bin', force: true };
    await h.restOk('POST', `${base}/commands/updateFirmware/queue`, { request });
    const data = { note: 'hello from the cloud', n: 7 };
    await h.restOk('POST', `${base}/messages`, { data, properties: { color: 'red', 'with space': 'a&b=c' } });

    // Device side: both arrive on reconnect; the device completes them.
    const second = await openWithInbox(dev);
    clients.push(second.client);
    const got = await second.take(2);
    const cmd = got.find((m) => m.properties.getValue('method-name') !== undefined);
    const plain = got.find((m) => m.properties.getValue('color') !== undefined);
    assert.ok(cmd, 'the queued command arrived with a method-name property');
    assert.ok(plain, 'the plain message arrived with its color property');
    assert.ok(methodNameMatches(cmd.properties.getValue('method-name'), 'updateFirmware'),
      `method-name ${cmd.properties.getValue('method-name')} names updateFirmware`);
    assert.deepEqual(JSON.parse(cmd.getData().toString('utf8')), request, 'queued command body is the request');
    assert.equal(plain.properties.getValue('with space'), 'a&b=c', 'property needing URL encoding');
    assert.deepEqual(JSON.parse(plain.getData().toString('utf8')), data, 'plain message body is the data');
    for (const m of got) {
      await h.withTimeout(second.client.complete(m), h.WAIT_MS, 'complete');
    }
    await h.withTimeout(second.client.close(), h.WAIT_MS, 'close');

    // Service side: completed messages are gone. Queue a marker; on the next connection the
    // marker is the first thing delivered, so nothing completed was delivered again.
    await h.restOk('POST', `${base}/messages`, { data: { marker: true }, properties: { marker: 'yes' } });
    const third = await openWithInbox(dev);
    clients.push(third.client);
    const [next] = await third.take(1);
    assert.equal(next.properties.getValue('marker'), 'yes', 'the first message after completion is the new marker');
    await h.withTimeout(third.client.complete(next), h.WAIT_MS, 'complete');
  });
}
