'use strict';
// Scenario 3, over every transport: telemetry with system and application properties, at
// the root and in a component (the SDK maps the `dt-subject` message property to `$.sub`
// over MQTT and to a message annotation over AMQP). The service side checks the latest
// values and, through the emulator's telemetry history (GET /api/emulator/devices/{id}/telemetry),
// that message id, correlation id, content type and encoding, application properties,
// component and body arrived as the SDK sent them.

const test = require('node:test');
const assert = require('node:assert/strict');
const { Message } = require('azure-iot-device');
const h = require('../lib/helpers');

const MODEL_ID = 'dtmi:iotcgo:conformance:TemperatureController;1';

function jsonMessage(body) {
  const msg = new Message(JSON.stringify(body));
  msg.contentType = 'application/json';
  msg.contentEncoding = 'utf-8';
  return msg;
}

for (const tr of h.TRANSPORTS) {
  test(`${tr.prefix}scenario 3: telemetry with properties and a component`, { timeout: h.TEST_TIMEOUT_MS }, async (t) => {
    const testStart = Date.now();
    const dev = await h.provisionDevice(tr, 'conf-tel', MODEL_ID);
    const client = await h.openSasClient(dev);
    t.after(() => h.closeQuietly(client));

    // Root telemetry with system properties and application properties whose values need
    // URL encoding in the property bag.
    const root = jsonMessage({ temperature: 21.5, status: 'ok', location: { lat: 47.64, lon: -122.13 } });
    root.messageId = h.uniqueId('mid');
    root.correlationId = 'corr-1';
    root.properties.add('alert', 'high & dry = 100%/yes?');
    root.properties.add('unit', 'celsius');
    const rootSent = await h.withTimeout(client.sendEvent(root), h.WAIT_MS, 'root telemetry acknowledgement');
    assert.equal(rootSent.constructor.name, 'MessageEnqueued', 'device side: the hub acknowledged the root message');

    // The hub shows receive times with milliseconds and ?since= is judged at that precision:
    // the two messages must not land in the same millisecond for the ?since= check below.
    await new Promise((resolve) => setTimeout(resolve, 5));

    // The same telemetry name in component thermostat1, with a different value.
    const comp = jsonMessage({ temperature: 33.25, targetReached: true });
    comp.properties.add('source', 'thermostat one');
    comp.properties.add('dt-subject', 'thermostat1');
    const compSent = await h.withTimeout(client.sendEvent(comp), h.WAIT_MS, 'component telemetry acknowledgement');
    assert.equal(compSent.constructor.name, 'MessageEnqueued', 'device side: the hub acknowledged the component message');

    // Service side. Wait for the component message first (sent last); then the root values
    // must still be those of the root message, so the component did not leak into the root.
    const base = `/api/devices/${dev.deviceId}`;
    const ext = `/api/emulator/devices/${dev.deviceId}`; // the emulator's extensions
    const compTemp = await h.pollRest(`${base}/components/thermostat1/telemetry/temperature`,
      (b) => b.value === 33.25, 'component temperature 33.25');
    const compFlag = await h.restOk('GET', `${base}/components/thermostat1/telemetry/targetReached`);
    assert.equal(compFlag.value, true, 'component targetReached');

    const rootTemp = await h.restOk('GET', `${base}/telemetry/temperature`);
    assert.equal(rootTemp.value, 21.5, 'root temperature is the root value, not the component one');
    const rootStatus = await h.restOk('GET', `${base}/telemetry/status`);
    assert.equal(rootStatus.value, 'ok', 'root status');
    const rootLoc = await h.restOk('GET', `${base}/telemetry/location`);
    assert.deepEqual(rootLoc.value, { lat: 47.64, lon: -122.13 }, 'root location (object value)');

    // Every message as the hub received it, oldest first.
    const hist = await h.restOk('GET', `${ext}/telemetry`);
    assert.ok(Array.isArray(hist.value), 'GET .../telemetry answers {"value": [...]}');
    assert.equal(hist.value.length, 2, `the history holds the two messages sent: ${JSON.stringify(hist.value).slice(0, 500)}`);
    const [hr, hc] = hist.value;
    assert.equal(hr.messageId, root.messageId, 'root message id');
    assert.equal(hr.correlationId, 'corr-1', 'root correlation id');
    assert.equal(hr.contentType, 'application/json', 'root content type');
    assert.equal(hr.contentEncoding, 'utf-8', 'root content encoding');
    assert.equal(hr.component, '', 'root message has no component');
    assert.equal(hr.properties.alert, 'high & dry = 100%/yes?', 'root property alert, decoded once');
    assert.equal(hr.properties.unit, 'celsius', 'root property unit');
    assert.deepEqual(hr.data, { temperature: 21.5, status: 'ok', location: { lat: 47.64, lon: -122.13 } }, 'root body');
    assert.equal(hc.component, 'thermostat1', 'component message component');
    assert.equal(hc.properties.source, 'thermostat one', 'component property source');
    assert.equal(hc.contentType, 'application/json', 'component content type');
    assert.deepEqual(hc.data, { temperature: 33.25, targetReached: true }, 'component body');
    assert.ok(Date.parse(hc.timestamp) >= Date.parse(hr.timestamp), 'history is oldest first');
    const onlyComp = await h.restOk('GET', `${ext}/telemetry?component=thermostat1`);
    assert.deepEqual(onlyComp.value.map((m) => m.component), ['thermostat1'], '?component= keeps that component only');
    const after = await h.restOk('GET', `${ext}/telemetry?since=${encodeURIComponent(hr.timestamp)}`);
    // (compared by message: the two were sent at least 5 ms apart)
    assert.deepEqual(after.value.map((m) => m.component), ['thermostat1'],
      '?since=<root timestamp> keeps only the later component message');

    for (const [what, v] of [['component temperature', compTemp], ['root temperature', rootTemp]]) {
      const ts = Date.parse(v.timestamp);
      assert.ok(!Number.isNaN(ts), `${what} timestamp ${v.timestamp} is a date`);
      // Loose sanity bound (clock skew), not a timing assertion: the value is from this run.
      assert.ok(ts >= testStart - 60000, `${what} timestamp ${v.timestamp} is from this run`);
    }
  });
}
