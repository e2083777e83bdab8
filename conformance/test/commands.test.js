'use strict';
// Scenario 6, over every transport: commands invoked through the REST API reach the
// device's method handlers (root and component `comp*cmd` names) and the REST caller sees
// the device's status code and payload.

const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('../lib/helpers');

const MODEL_ID = 'dtmi:iotcgo:conformance:TemperatureController;1';

for (const tr of h.TRANSPORTS) {
  test(`${tr.prefix}scenario 6: commands through the REST API, root and component`, { timeout: h.TEST_TIMEOUT_MS }, async (t) => {
    const dev = await h.provisionDevice(tr, 'conf-cmd', MODEL_ID);
    const client = await h.openSasClient(dev);
    t.after(() => h.closeQuietly(client));

    const seen = [];
    client.onDeviceMethod('reboot', (req, res) => {
      seen.push({ name: req.methodName, payload: req.payload });
      res.send(200, { rebooted: true, delay: req.payload.delay }).catch(() => {});
    });
    client.onDeviceMethod('thermostat1*getMaxMinReport', (req, res) => {
      seen.push({ name: req.methodName, payload: req.payload });
      res.send(200, { maxTemp: 30.5, minTemp: 18.25, since: req.payload }).catch(() => {});
    });
    client.onDeviceMethod('selfTest', (req, res) => {
      seen.push({ name: req.methodName, payload: req.payload });
      res.send(500, { error: 'sensor offline' }).catch(() => {});
    });
    await h.syncSubscriptions(client); // the methods subscription (MQTT SUBSCRIBE, AMQP links) is in place

    const base = `/api/devices/${dev.deviceId}`;

    // Root command with an object request.
    const r1 = await h.restOk('POST', `${base}/commands/reboot`, { request: { delay: 5 }, responseTimeout: 20 }, 201);
    assert.equal(r1.responseCode, 200, 'REST responseCode (root)');
    assert.deepEqual(r1.response, { rebooted: true, delay: 5 }, 'REST response payload (root)');
    assert.deepEqual(seen.shift(), { name: 'reboot', payload: { delay: 5 } }, 'device saw name and payload (root)');

    // Component command: the device sees `thermostat1*getMaxMinReport`; a string request.
    const since = '2024-01-01T00:00:00.000Z';
    const r2 = await h.restOk('POST', `${base}/components/thermostat1/commands/getMaxMinReport`,
      { request: since, responseTimeout: 20 }, 201);
    assert.equal(r2.responseCode, 200, 'REST responseCode (component)');
    assert.deepEqual(r2.response, { maxTemp: 30.5, minTemp: 18.25, since }, 'REST response payload (component)');
    assert.deepEqual(seen.shift(), { name: 'thermostat1*getMaxMinReport', payload: since },
      'device saw the component*command name and payload');

    // A device answer with an error status reaches the caller unchanged.
    const r3 = await h.restOk('POST', `${base}/commands/selfTest`, { request: { full: true }, responseTimeout: 20 }, 201);
    assert.equal(r3.responseCode, 500, 'REST responseCode carries the device status');
    assert.deepEqual(r3.response, { error: 'sensor offline' }, 'REST response payload (error status)');
    assert.deepEqual(seen.shift(), { name: 'selfTest', payload: { full: true } }, 'device saw selfTest');
    assert.equal(seen.length, 0, 'each command reached the device exactly once');
  });
}
