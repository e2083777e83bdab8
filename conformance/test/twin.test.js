'use strict';
// Scenarios 4 and 5, over every transport: get the twin, patch reported properties (REST
// reads them back), and receive a desired patch written through the REST API.

const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('../lib/helpers');

const MODEL_ID = 'dtmi:iotcgo:conformance:TemperatureController;1';

function updateReported(twin, patch) {
  const p = new Promise((resolve, reject) => {
    twin.properties.reported.update(patch, (err) => (err ? reject(err) : resolve()));
  });
  return h.withTimeout(p, h.WAIT_MS, 'reported properties update');
}

async function freshTwin(client) {
  return h.withTimeout(client.getTwin(), h.WAIT_MS, 'getTwin');
}

for (const tr of h.TRANSPORTS) {
  test(`${tr.prefix}scenario 4: getTwin and patch reported properties`, { timeout: h.TEST_TIMEOUT_MS }, async (t) => {
    const dev = await h.provisionDevice(tr, 'conf-rep', MODEL_ID);
    let client = await h.openSasClient(dev);
    t.after(() => h.closeQuietly(client));

    const twin = await freshTwin(client);
    const v0 = twin.properties.reported.$version;
    assert.equal(typeof v0, 'number', 'reported $version is a number');
    assert.equal(typeof twin.properties.desired.$version, 'number', 'desired $version is a number');

    await updateReported(twin, {
      firmwareVersion: '1.2.3',
      batteryLevel: 87,
      settings: { mode: 'eco', level: 3 },
      thermostat1: { __t: 'c', maxTempSinceLastReboot: 30.5 },
    });

    // Service side: root and component properties.
    const base = `/api/devices/${dev.deviceId}`;
    const props = await h.pollRest(`${base}/properties`, (b) => b.firmwareVersion === '1.2.3', 'firmwareVersion 1.2.3');
    assert.equal(props.batteryLevel, 87, 'REST batteryLevel');
    assert.deepEqual(props.settings, { mode: 'eco', level: 3 }, 'REST settings');
    const comp = await h.restOk('GET', `${base}/components/thermostat1/properties`);
    assert.equal(comp.maxTempSinceLastReboot, 30.5, 'REST component maxTempSinceLastReboot');

    // null removes a member.
    await updateReported(twin, { batteryLevel: null });
    await h.pollRest(`${base}/properties`, (b) => !('batteryLevel' in b), 'batteryLevel removed');

    // Device side, on a new connection: the hub kept the reported section and bumped its
    // version once per patch.
    await h.closeQuietly(client);
    client = await h.openSasClient(dev);
    const again = await freshTwin(client);
    const rep = again.properties.reported;
    assert.equal(rep.firmwareVersion, '1.2.3', 'twin firmwareVersion');
    assert.deepEqual(rep.settings, { mode: 'eco', level: 3 }, 'twin settings');
    assert.equal(rep.thermostat1 && rep.thermostat1.maxTempSinceLastReboot, 30.5, 'twin component property');
    assert.equal(rep.thermostat1.__t, 'c', 'twin component marker');
    assert.ok(!('batteryLevel' in rep), 'twin batteryLevel removed');
    assert.equal(rep.$version, v0 + 2, 'reported $version grew by one per patch');
  });

  test(`${tr.prefix}scenario 5: desired patch made through the REST API reaches the device`, { timeout: h.TEST_TIMEOUT_MS }, async (t) => {
    const dev = await h.provisionDevice(tr, 'conf-des', MODEL_ID);
    let client = await h.openSasClient(dev);
    t.after(() => h.closeQuietly(client));

    const twin = await freshTwin(client);
    const v0 = twin.properties.desired.$version;
    assert.equal(typeof v0, 'number', 'desired $version is a number');
    twin.on('properties.desired', () => {}); // the first listener makes the SDK subscribe
    await h.syncSubscriptions(client); // the desired-patch subscription (MQTT SUBSCRIBE, AMQP twin PUT) is in place

    const base = `/api/devices/${dev.deviceId}`;
    const rootGot = h.waitForEvent(twin, 'properties.desired', (p) => p.targetTemperature === 23);
    const patched = await h.restOk('PATCH', `${base}/properties`, { targetTemperature: 23 });
    assert.equal(patched.$metadata.targetTemperature.desiredValue, 23, 'REST PATCH answer carries the written value in $metadata');
    const [rootPatch] = await rootGot;
    assert.equal(typeof rootPatch.$version, 'number', 'patch carries $version');
    assert.ok(rootPatch.$version > v0, `patch $version ${rootPatch.$version} > ${v0}`);

    const compGot = h.waitForEvent(twin, 'properties.desired',
      (p) => p.thermostat1 !== undefined && p.thermostat1.targetTemperature === 24.5);
    const compPatched = await h.restOk('PATCH', `${base}/components/thermostat1/properties`, { targetTemperature: 24.5 });
    assert.equal(compPatched.$metadata.targetTemperature.desiredValue, 24.5, 'REST component PATCH answer carries the written value in $metadata');
    const [compPatch] = await compGot;
    assert.equal(compPatch.thermostat1.__t, 'c', 'component patch carries the "__t":"c" marker');
    assert.equal(compPatch.$version, rootPatch.$version + 1, 'desired $version grew by one');

    // Acknowledge the write as IoT Plug and Play devices do.
    await updateReported(twin, { targetTemperature: { value: 23, ac: 200, av: rootPatch.$version, ad: 'done' } });

    // Service side: IoT Central shows the value with the desired write and the device's ack
    // in "$metadata", and the component's desired value under the component.
    const props = await h.pollRest(`${base}/properties`,
      (b) => b.$metadata && b.$metadata.targetTemperature && b.$metadata.targetTemperature.ackCode === 200,
      'targetTemperature acknowledged');
    assert.equal(props.targetTemperature, 23, 'REST targetTemperature');
    const md = props.$metadata.targetTemperature;
    assert.equal(md.desiredValue, 23, 'REST $metadata desiredValue');
    assert.equal(md.ackVersion, rootPatch.$version, 'REST $metadata ackVersion');
    assert.equal(md.ackDescription, 'done', 'REST $metadata ackDescription');
    const compProps = await h.restOk('GET', `${base}/components/thermostat1/properties`);
    assert.equal(compProps.targetTemperature, 24.5, 'REST component targetTemperature (desired, not yet acked)');

    // Device side, on a new connection (a fresh twin, not the SDK's merged copy): the
    // desired section holds both writes and the reported section the ack.
    await h.closeQuietly(client);
    client = await h.openSasClient(dev);
    const again = await freshTwin(client);
    assert.equal(again.properties.desired.targetTemperature, 23, 'twin desired targetTemperature');
    assert.equal(again.properties.desired.thermostat1.targetTemperature, 24.5, 'twin desired component value');
    assert.equal(again.properties.desired.$version, compPatch.$version, 'twin desired $version = last patch version');
    assert.equal(again.properties.reported.targetTemperature.av, rootPatch.$version, 'twin reported ack version');
  });
}

// The device template of TEMPLATE_MODEL_ID: a root writable property and a
// thermostat1 component (as IoT Central stores a template).
const TEMPLATE_MODEL_ID = 'dtmi:iotcgo:conformance:TemplatedController;1';
const TEMPLATE = {
  displayName: 'Conformance templated controller',
  '@type': ['ModelDefinition', 'DeviceModel'],
  capabilityModel: {
    '@id': TEMPLATE_MODEL_ID,
    '@type': 'Interface',
    contents: [
      { '@type': 'Property', name: 'mode', schema: 'string', writable: true },
      {
        '@type': 'Component', name: 'thermostat1',
        schema: {
          '@id': 'dtmi:iotcgo:conformance:Thermostat;1', '@type': 'Interface',
          contents: [{ '@type': 'Property', name: 'targetTemperature', schema: 'double', writable: true }],
        },
      },
    ],
  },
};

for (const tr of h.TRANSPORTS) {
  test(`${tr.prefix}scenario 5b: a root PATCH routed to a component by the device template`, { timeout: h.TEST_TIMEOUT_MS }, async (t) => {
    await h.restOk('PUT', `/api/deviceTemplates/${encodeURIComponent(TEMPLATE_MODEL_ID)}`, TEMPLATE);
    const dev = await h.provisionDevice(tr, 'conf-tpl', TEMPLATE_MODEL_ID);
    const client = await h.openSasClient(dev);
    t.after(() => h.closeQuietly(client));
    const twin = await freshTwin(client);
    twin.on('properties.desired', () => {});
    await h.syncSubscriptions(client);

    // The device never reported thermostat1: only the template tells it is a component.
    const base = `/api/devices/${dev.deviceId}`;
    const got = h.waitForEvent(twin, 'properties.desired',
      (p) => p.thermostat1 !== undefined && p.thermostat1.targetTemperature === 19.5);
    const answer = await h.restOk('PATCH', `${base}/properties`, { thermostat1: { targetTemperature: 19.5 } }, 202);
    assert.equal(answer.thermostat1.$metadata.targetTemperature.desiredValue, 19.5, 'REST answer nests the component');
    const [patch] = await got;
    assert.equal(patch.thermostat1.__t, 'c', 'the device receives a component patch ("__t":"c")');
    assert.equal(patch.targetTemperature, undefined, 'nothing written at the root');

    // A name the template lacks is refused as IoT Central refuses it.
    const bad = await h.rest('PATCH', `${base}/properties`, { thermostat1: { nope: 1 } });
    assert.equal(bad.status, 404, `unknown component property: ${bad.text.slice(0, 200)}`);
  });
}
