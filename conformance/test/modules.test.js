'use strict';
// Scenario 17: module identities. The official service SDK (azure-iothub, pinned) creates a
// device and a module (Registry.addModule); the official device SDK's ModuleClient
// (azure-iot-device, over each transport of azure-iot-device-mqtt and azure-iot-device-amqp)
// connects as the module with its connection string (client id {device}/{module} over MQTT,
// /devices/{d}/modules/{m}/... links and a module CBS audience over AMQP) and:
//   - sends telemetry, seen in the emulator's telemetry history of the device with
//     iothub-connection-module-id = the module id;
//   - gets a desired property set with Registry.updateModuleTwin, reports a property read
//     back with Registry.getModuleTwin, the module twin's $version growing;
//   - answers a direct method the service invokes with Client.invokeDeviceMethod(deviceId,
//     moduleId, ...).
// Service side, once: the registry's module errors (409 on a second addModule, 404
// ModuleNotFound, a stale etag 412), the module list, a module query, an edge device with its
// generated scope, $edgeAgent/$edgeHub and a child device, and a device delete removing its
// modules. Module-to-module routing ($edgeHub inputs/outputs) is not emulated.

const test = require('node:test');
const assert = require('node:assert/strict');
const { Registry, Client: ServiceClient } = require('azure-iothub');
const { ModuleClient, Message } = require('azure-iot-device');
const h = require('../lib/helpers');

function serviceConnectionString(policy) {
  const info = h.loadInfo();
  const cs = info.serviceConnectionStrings && info.serviceConnectionStrings[policy];
  assert.ok(typeof cs === 'string' && cs.startsWith(`HostName=${info.hubHost};SharedAccessKeyName=${policy};`),
    `info file has the ${policy} connection string`);
  return cs;
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

/** The code IoT Hub puts in an error body ("ErrorCode:{code};..."). */
function errorCode(err) {
  const body = err.responseBody || (err.response && err.response.body);
  const text = typeof body === 'string' ? body : JSON.stringify(body || {});
  const m = /ErrorCode:([A-Za-z]+);/.exec(text);
  return m ? m[1] : `(no error code in ${text.slice(0, 200)})`;
}

test('scenario 17: service SDK modules: CRUD errors, list, query, edge scopes, delete with the device', { timeout: h.TEST_TIMEOUT_MS }, async () => {
  const registry = Registry.fromConnectionString(serviceConnectionString('iothubowner'));
  const deviceId = h.uniqueId('conf-mod');
  await registry.create({ deviceId });
  const moduleId = 'filter';
  const created = (await registry.addModule({ deviceId, moduleId, managedBy: 'conformance' })).responseBody;
  assert.equal(created.moduleId, moduleId);
  assert.equal(created.deviceId, deviceId);
  assert.equal(created.managedBy, 'conformance');
  assert.ok(created.authentication.symmetricKey.primaryKey, 'module keys generated');
  assert.ok(created.etag && created.generationId, 'etag and generationId');

  const dup = await refused(registry.addModule({ deviceId, moduleId }), 'a second addModule');
  assert.equal(dup.response.statusCode, 409, `second addModule: ${dup.message}`);
  assert.equal(errorCode(dup), 'ModuleAlreadyExistsOnDevice');
  const missing = await refused(registry.getModule(deviceId, 'nope'), 'getModule of an unknown module');
  assert.equal(missing.response.statusCode, 404);
  assert.equal(errorCode(missing), 'ModuleNotFound');
  const noDevice = await refused(registry.addModule({ deviceId: h.uniqueId('conf-nodev'), moduleId }), 'addModule on an unknown device');
  assert.equal(noDevice.constructor.name, 'DeviceNotFoundError', `unknown device: ${noDevice.message}`);

  // Update with the etag (the keys kept), then the old etag is stale.
  const got = (await registry.getModule(deviceId, moduleId)).responseBody;
  const updated = (await registry.updateModule({ ...got, managedBy: 'someone-else' })).responseBody;
  assert.equal(updated.managedBy, 'someone-else');
  assert.equal(updated.authentication.symmetricKey.primaryKey, created.authentication.symmetricKey.primaryKey, 'keys kept');
  assert.notEqual(updated.etag, got.etag, 'an update changes the etag');
  const stale = await refused(registry.updateModule({ ...got, managedBy: 'x' }), 'a module update with a stale etag');
  assert.equal(stale.response.statusCode, 412);

  await registry.addModule({ deviceId, moduleId: 'second' });
  const list = (await registry.getModulesOnDevice(deviceId)).responseBody;
  assert.deepEqual(list.map((m) => m.moduleId), ['filter', 'second'], 'the module list');

  // The module twins in a query of devices.modules.
  const q = (await registry.createQuery(`SELECT * FROM devices.modules WHERE deviceId = '${deviceId}'`).next()).result;
  assert.deepEqual(q.map((t) => t.moduleId).sort(), ['filter', 'second'], `devices.modules query: ${JSON.stringify(q).slice(0, 300)}`);

  // An edge device: a generated scope and the $edgeAgent/$edgeHub modules; a child device
  // names it by that scope, shown as its deviceScope and parentScopes.
  const edgeId = h.uniqueId('conf-edge');
  const edge = (await registry.create({ deviceId: edgeId, capabilities: { iotEdge: true } })).responseBody;
  assert.equal(edge.capabilities.iotEdge, true);
  assert.match(edge.deviceScope, new RegExp(`^ms-azure-iot-edge://${edgeId}-`), `edge scope ${edge.deviceScope}`);
  const edgeModules = (await registry.getModulesOnDevice(edgeId)).responseBody.map((m) => m.moduleId).sort();
  assert.deepEqual(edgeModules, ['$edgeAgent', '$edgeHub'], 'IoT Hub creates the edge modules');
  const childId = h.uniqueId('conf-child');
  const child = (await registry.create({ deviceId: childId, deviceScope: edge.deviceScope })).responseBody;
  assert.equal(child.deviceScope, edge.deviceScope, 'the child has its parent scope');
  assert.deepEqual(child.parentScopes, [edge.deviceScope], 'and as its parent scope');
  const orphan = await refused(registry.create({ deviceId: h.uniqueId('conf-orphan'), deviceScope: 'ms-azure-iot-edge://none-1' }), 'a child of no edge device');
  assert.equal(orphan.response.statusCode, 400);
  const children = (await registry.createQuery(`SELECT deviceId FROM devices WHERE deviceScope = '${edge.deviceScope}' AND capabilities.iotEdge = false`).next()).result;
  assert.deepEqual(children, [{ deviceId: childId }], 'the child found by its scope');
  await registry.delete(childId);
  await registry.delete(edgeId);

  // Deleting the device deletes its modules.
  await registry.delete(deviceId);
  await registry.create({ deviceId });
  assert.deepEqual((await registry.getModulesOnDevice(deviceId)).responseBody, [], 'a device of the same id has no modules');
  await registry.delete(deviceId);
});

for (const tr of h.TRANSPORTS) {
  test(`${tr.prefix}scenario 17: ModuleClient telemetry, module twin and module method over ${tr.title}`, { timeout: h.TEST_TIMEOUT_MS }, async (t) => {
    const info = h.loadInfo();
    const registry = Registry.fromConnectionString(serviceConnectionString('iothubowner'));
    const deviceId = h.uniqueId('conf-modc');
    const moduleId = 'sensor';
    await registry.create({ deviceId });
    const mod = (await registry.addModule({ deviceId, moduleId })).responseBody;
    let client;
    const service = ServiceClient.fromConnectionString(serviceConnectionString('service'));
    t.after(async () => {
      if (client) await h.closeQuietly(client);
      await registry.delete(deviceId).catch(() => {});
    });

    // A wrong key is refused.
    const bad = ModuleClient.fromConnectionString(
      `HostName=${info.hubHost};DeviceId=${deviceId};ModuleId=${moduleId};SharedAccessKey=${Buffer.alloc(32, 7).toString('base64')}`, tr.Device);
    const badErr = await refused(h.withTimeout(bad.open(), h.WAIT_MS, 'a module open with a wrong key'), 'a module open with a wrong key');
    assert.ok(badErr, 'refused');
    await h.closeQuietly(bad);

    client = h.moduleClient(tr,
      `HostName=${info.hubHost};DeviceId=${deviceId};ModuleId=${moduleId};SharedAccessKey=${mod.authentication.symmetricKey.primaryKey}`);
    await h.withTimeout(client.open(), h.WAIT_MS, `module connection over ${tr.title}`);

    // Telemetry: the module id reaches the readers of the device's telemetry.
    const msg = new Message(JSON.stringify({ temperature: 19.5 }));
    msg.messageId = h.uniqueId('mmsg');
    msg.contentType = 'application/json';
    msg.contentEncoding = 'utf-8';
    await h.withTimeout(client.sendEvent(msg), h.WAIT_MS, 'module telemetry acknowledgement');
    const hist = await h.restOk('GET', `/api/emulator/devices/${deviceId}/telemetry`);
    const seen = hist.value.find((m) => m.systemProperties && m.systemProperties['message-id'] === msg.messageId);
    assert.ok(seen, `the module message is in the device's history: ${JSON.stringify(hist.value).slice(0, 400)}`);
    assert.equal(seen.systemProperties['iothub-connection-module-id'], moduleId, 'iothub-connection-module-id');
    assert.equal(seen.systemProperties['iothub-connection-device-id'], deviceId, 'iothub-connection-device-id');
    assert.deepEqual(seen.data, { temperature: 19.5 });

    // Module twin: desired from the service, reported from the module.
    const twin = await h.withTimeout(client.getTwin(), h.WAIT_MS, 'the module twin');
    const v0 = twin.properties.desired.$version;
    const desiredSeen = new Promise((resolve) => {
      twin.on('properties.desired', (patch) => { if (patch.threshold !== undefined) resolve(patch); });
    });
    // The SDK subscribes to desired patches in the background: wait until it did.
    await h.syncSubscriptions(client);
    const svcTwin = (await registry.getModuleTwin(deviceId, moduleId)).responseBody;
    assert.equal(svcTwin.moduleId, moduleId, 'the service reads the module twin');
    await registry.updateModuleTwin(deviceId, moduleId, { properties: { desired: { threshold: 42 } } }, svcTwin.etag);
    const patch = await h.withTimeout(desiredSeen, h.WAIT_MS, 'the desired patch at the module');
    assert.equal(patch.threshold, 42);
    assert.equal(patch.$version, v0 + 1, 'the desired $version grew by one');
    await h.withTimeout(new Promise((resolve, reject) => {
      twin.properties.reported.update({ firmware: '1.2.3' }, (err) => (err ? reject(err) : resolve()));
    }), h.WAIT_MS, 'the reported patch');
    const back = (await registry.getModuleTwin(deviceId, moduleId)).responseBody;
    assert.equal(back.properties.reported.firmware, '1.2.3', 'reported read back by the service');
    assert.equal(back.properties.desired.threshold, 42);
    assert.ok(back.properties.reported.$version >= 2, 'the reported $version grew');
    const deviceTwin = (await registry.getTwin(deviceId)).responseBody;
    assert.equal(deviceTwin.properties.reported.firmware, undefined, "the device's own twin is another one");

    // A direct method to the module.
    const calls = [];
    client.onMethod('reset', (req, res) => {
      calls.push(req.payload);
      res.send(201, { done: req.payload.delay }).catch(() => {});
    });
    // The method subscription is in place once the service can reach it: connectTimeout waits.
    const result = (await service.invokeDeviceMethod(deviceId, moduleId,
      { methodName: 'reset', payload: { delay: 3 }, responseTimeoutInSeconds: 15, connectTimeoutInSeconds: 10 })).result;
    assert.equal(result.status, 201, 'the module status reaches the service');
    assert.deepEqual(result.payload, { done: 3 });
    assert.deepEqual(calls, [{ delay: 3 }], 'the module saw the call once');
    const mtwin = (await registry.getModule(deviceId, moduleId)).responseBody;
    assert.equal(mtwin.connectionState, 'Connected', 'the registry shows the module connected');

    // The device's own methods are not the module's.
    const offline = await refused(service.invokeDeviceMethod(deviceId, { methodName: 'reset', payload: {}, responseTimeoutInSeconds: 5 }), 'a method to the (offline) device');
    assert.equal(offline.response.statusCode, 404, `device method: ${offline.message}`);
  });
}
