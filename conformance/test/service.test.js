'use strict';
// Scenario 9: the official IoT Hub service SDK (azure-iothub, pinned) against the emulator,
// unchanged: it reads a connection string from the info file (serviceConnectionStrings, one
// per shared access policy) and talks HTTPS to the hub host on 443, as it does to Azure.
// Registry CRUD with etags, bulk import, twin updates with tags and desired properties, a stale twin
// etag refused (412), a query with paging, statistics, policy rights (registryRead cannot
// write), and a direct method round trip to a device connected with azure-iot-device over
// every transport; (10) a cloud-to-device message sent with Client.send and ack 'full' reaches
// the device with its message id and properties, and the feedback receiver gets its record;
// (11) selfSigned devices; (12) JobClient: a scheduled method job, a twin update job, a cancel.

const test = require('node:test');
const assert = require('node:assert/strict');
const { Registry, Client: ServiceClient } = require('azure-iothub');
const { Message } = require('azure-iot-device');
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

test('scenario 9: service SDK registry (and bulk), configurations, twins with tags and etags, query, statistics, rights', { timeout: h.TEST_TIMEOUT_MS }, async () => {
  const registry = Registry.fromConnectionString(serviceConnectionString('iothubowner'));
  const deviceId = h.uniqueId('conf-svc');

  // Create: keys generated, an etag, enabled.
  const created = (await registry.create({ deviceId })).responseBody;
  assert.equal(created.deviceId, deviceId);
  assert.equal(created.status, 'enabled');
  assert.ok(created.authentication.symmetricKey.primaryKey, 'a primary key was generated');
  assert.ok(created.etag, 'the device has an etag');
  const got = (await registry.get(deviceId)).responseBody;
  assert.equal(got.etag, created.etag, 'GET returns the same etag');
  assert.equal(got.authentication.symmetricKey.primaryKey, created.authentication.symmetricKey.primaryKey);

  const dup = await refused(registry.create({ deviceId }), 'a second create');
  assert.equal(dup.constructor.name, 'DeviceAlreadyExistsError', `second create: ${dup.message}`);

  // Update: disabled, a new etag.
  const updated = (await registry.update({ deviceId, status: 'disabled', statusReason: 'conformance' })).responseBody;
  assert.equal(updated.status, 'disabled');
  assert.notEqual(updated.etag, created.etag, 'an update changes the etag');

  // Twin: tags and desired properties through Twin.update (If-Match: the twin's etag).
  const site = h.uniqueId('site');
  const twin = (await registry.getTwin(deviceId)).responseBody;
  const etag0 = twin.etag;
  assert.ok(etag0, 'the twin has an etag');
  await twin.update({ tags: { site, floor: 2 }, properties: { desired: { fan: true, mode: 'eco' } } });
  assert.equal(twin.tags.site, site, 'tags updated');
  assert.equal(twin.properties.desired.fan, true, 'desired updated');
  assert.notEqual(twin.etag, etag0, 'the update changed the twin etag');

  // The etag read before the update is stale: 412.
  const stale = await refused(registry.updateTwin(deviceId, { tags: { floor: 3 } }, etag0), 'a twin update with a stale etag');
  assert.equal(stale.constructor.name, 'InvalidEtagError', `stale etag: ${stale.message}`);
  assert.equal(stale.response.statusCode, 412);

  // null removes a desired property and a tag.
  const patched = (await registry.updateTwin(deviceId, { tags: { floor: null }, properties: { desired: { mode: null } } }, twin.etag)).responseBody;
  assert.equal(patched.tags.floor, undefined, 'tag removed');
  assert.equal(patched.properties.desired.mode, undefined, 'desired property removed');
  assert.equal(patched.properties.desired.fan, true, 'the other desired property stays');

  // A second device on the same site, for the query.
  const other = h.uniqueId('conf-svc');
  await registry.create({ deviceId: other });
  const otherTwin = (await registry.getTwin(other)).responseBody;
  await otherTwin.update({ tags: { site } });

  // Query with paging: one twin per page.
  const query = registry.createQuery(`SELECT * FROM devices WHERE tags.site = '${site}'`, 1);
  const ids = [];
  while (query.hasMoreResults) {
    const page = (await query.nextAsTwin()).result;
    assert.ok(page.length <= 1, 'a page holds at most x-ms-max-item-count twins');
    for (const t of page) ids.push(t.deviceId);
  }
  assert.deepEqual(ids.sort(), [deviceId, other].sort(), 'the query found both devices');
  const count = (await registry.createQuery(`SELECT COUNT() AS n FROM devices WHERE tags.site = '${site}' AND status = 'disabled'`).next()).result;
  assert.deepEqual(count, [{ n: 1 }], 'COUNT() with AND');

  // A configuration targeting the site: applied to both devices' desired properties.
  const cfgId = h.uniqueId('cfg');
  const cfg = (await registry.addConfiguration({
    id: cfgId, priority: 10, labels: { owner: 'conformance' }, targetCondition: `tags.site = '${site}'`,
    content: { deviceContent: { 'properties.desired.firmware': { version: '2.0' } } },
    metrics: { queries: { onSite: `SELECT deviceId FROM devices WHERE tags.site = '${site}'` } },
  })).responseBody;
  assert.ok(cfg.etag, 'the configuration has an etag');
  const readCfg = (await registry.getConfiguration(cfgId)).responseBody;
  assert.equal(readCfg.systemMetrics.results.targetedCount, 2, 'both devices targeted');
  assert.equal(readCfg.systemMetrics.results.appliedCount, 2, 'applied to both');
  assert.equal(readCfg.metrics.results.onSite, 2, 'custom metric');
  assert.equal((await registry.getTwin(other)).responseBody.properties.desired.firmware.version, '2.0', 'content applied');
  await registry.removeConfiguration(cfgId);

  // Statistics.
  const stats = (await registry.getRegistryStatistics()).responseBody;
  assert.ok(stats.totalDeviceCount >= 2 && stats.disabledDeviceCount >= 1, `registry statistics ${JSON.stringify(stats)}`);

  // registryRead reads but cannot write.
  const reader = Registry.fromConnectionString(serviceConnectionString('registryRead'));
  assert.equal((await reader.get(deviceId)).responseBody.deviceId, deviceId, 'registryRead reads');
  const denied = await refused(reader.create({ deviceId: h.uniqueId('conf-svc') }), 'a create with registryRead');
  assert.equal(denied.constructor.name, 'UnauthorizedError', `registryRead create: ${denied.message}`);

  // Bulk import: two devices at once, then a bulk delete.
  const bulkIds = [h.uniqueId('conf-bulk'), h.uniqueId('conf-bulk')];
  const added = (await registry.addDevices(bulkIds.map((id) => ({ deviceId: id })))).responseBody;
  assert.equal(added.isSuccessful, true, `bulk create: ${JSON.stringify(added)}`);
  for (const id of bulkIds) assert.equal((await registry.get(id)).responseBody.status, 'enabled', `bulk-created ${id}`);
  const again = (await registry.addDevices([{ deviceId: bulkIds[0] }])).responseBody;
  assert.equal(again.isSuccessful, false, 'a bulk create of an existing device fails');
  assert.equal(again.errors[0].errorCode, 'DeviceAlreadyExists');
  const removed = (await registry.removeDevices(bulkIds.map((id) => ({ deviceId: id })), true)).responseBody;
  assert.equal(removed.isSuccessful, true, `bulk delete: ${JSON.stringify(removed)}`);

  // Delete, then the device is gone.
  await registry.delete(deviceId);
  await registry.delete(other);
  const gone = await refused(registry.get(deviceId), 'GET of a deleted device');
  assert.equal(gone.constructor.name, 'DeviceNotFoundError', `deleted device: ${gone.message}`);
});

for (const tr of h.TRANSPORTS) {
  test(`${tr.prefix}scenario 9: service SDK direct method round trip`, { timeout: h.TEST_TIMEOUT_MS }, async (t) => {
    // A device created with the service SDK connects with its key.
    const registry = Registry.fromConnectionString(serviceConnectionString('iothubowner'));
    const deviceId = h.uniqueId('conf-svcm');
    const created = (await registry.create({ deviceId })).responseBody;
    const info = h.loadInfo();
    let client;
    t.after(async () => {
      if (client) await h.closeQuietly(client); // before the delete, which drops the connection
      await registry.delete(deviceId).catch(() => {});
    });
    client = await h.openSasClient({ tr, deviceId, hub: info.hubHost, key: created.authentication.symmetricKey.primaryKey });
    const seen = [];
    client.onDeviceMethod('echo', (req, res) => {
      seen.push(req.payload);
      res.send(203, { echoed: req.payload }).catch(() => {});
    });
    await h.syncSubscriptions(client);

    const service = ServiceClient.fromConnectionString(serviceConnectionString('service'));
    const result = (await service.invokeDeviceMethod(deviceId, { methodName: 'echo', payload: { n: 7 }, responseTimeoutInSeconds: 15 })).result;
    assert.equal(result.status, 203, 'the device status reaches the service');
    assert.deepEqual(result.payload, { echoed: { n: 7 } }, 'the device payload reaches the service');
    assert.deepEqual(seen, [{ n: 7 }], 'the device saw the payload once');

    const twin = (await registry.getTwin(deviceId)).responseBody;
    assert.equal(twin.connectionState, 'Connected', 'the twin shows the connection');
  });
}

for (const tr of h.TRANSPORTS) {
  test(`${tr.prefix}scenario 10: service SDK cloud-to-device with ack 'full' and its feedback record, an expired message`, { timeout: h.TEST_TIMEOUT_MS }, async (t) => {
    const registry = Registry.fromConnectionString(serviceConnectionString('iothubowner'));
    const deviceId = h.uniqueId('conf-svcc');
    const created = (await registry.create({ deviceId })).responseBody;
    const info = h.loadInfo();
    let client;
    const service = ServiceClient.fromConnectionString(serviceConnectionString('service'));
    t.after(async () => {
      if (client) await h.closeQuietly(client);
      await service.close().catch(() => {});
      await registry.delete(deviceId).catch(() => {});
    });
    client = await h.openSasClient({ tr, deviceId, hub: info.hubHost, key: created.authentication.symmetricKey.primaryKey });
    const delivered = [];
    const received = new Promise((resolve) => {
      client.on('message', (msg) => {
        client.complete(msg).catch(() => {});
        delivered.push(msg.messageId);
        resolve(msg);
      });
    });
    await h.syncSubscriptions(client);

    await service.open();
    const receiver = (await service.getFeedbackReceiver()).result;
    const messageId = h.uniqueId('msg');
    const expiredId = h.uniqueId('msg-exp');
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
    const feedback = recordOf(messageId);

    const msg = new Message(JSON.stringify({ hello: tr.id }));
    msg.messageId = messageId;
    msg.ack = 'full';
    msg.properties.add('color', 'green');
    await service.send(deviceId, msg);

    const got = await h.withTimeout(received, h.WAIT_MS, 'the cloud-to-device message at the device');
    assert.equal(got.messageId, messageId, 'the service message id reaches the device');
    assert.equal(got.properties.getValue('color'), 'green', 'application property');
    assert.deepEqual(JSON.parse(got.data.toString()), { hello: tr.id }, 'body');

    const rec = await h.withTimeout(feedback, h.WAIT_MS, 'the feedback record');
    assert.equal(rec.statusCode, 'Success', 'completed by the device: Success');
    assert.equal(rec.deviceId, deviceId);
    assert.ok(rec.enqueuedTimeUtc, 'feedback time');

    // A message already past its expiry time is not delivered; its negative ack gives Expired.
    const stale = new Message('too late');
    stale.messageId = expiredId;
    stale.ack = 'negative';
    stale.expiryTimeUtc = Date.now() - 1000;
    await service.send(deviceId, stale);
    const exp = await h.withTimeout(recordOf(expiredId), h.WAIT_MS, 'the Expired feedback record');
    assert.equal(exp.statusCode, 'Expired', 'an expired message: Expired');
    assert.deepEqual(delivered, [messageId], 'the expired message never reached the device');
  });
}

for (const tr of h.TRANSPORTS) {
  test(`${tr.prefix}scenario 11: a selfSigned device created with the service SDK connects with its certificate`, { timeout: h.TEST_TIMEOUT_MS }, async (t) => {
    const crypto = require('node:crypto');
    const registry = Registry.fromConnectionString(serviceConnectionString('iothubowner'));
    const deviceId = h.uniqueId('conf-svctp');
    const x509 = h.makeCertificates(deviceId);
    const other = h.makeCertificates(deviceId);
    const thumbprint = new crypto.X509Certificate(x509.cert).fingerprint.replace(/:/g, '');
    const created = (await registry.create({ deviceId, authentication: { x509Thumbprint: { primaryThumbprint: thumbprint } } })).responseBody;
    assert.equal(created.authentication.type, 'selfSigned');
    assert.equal(created.authentication.x509Thumbprint.primaryThumbprint, thumbprint.toUpperCase());
    const info = h.loadInfo();
    let client;
    t.after(async () => {
      if (client) await h.closeQuietly(client);
      await registry.delete(deviceId).catch(() => {});
    });
    // Another certificate with the same CN is refused: at connect over MQTT; over AMQP the
    // SDK opens the connection without a link, so the refusal comes with the first send.
    let rogue;
    await assert.rejects((async () => {
      rogue = await h.openX509Client(tr, info.hubHost, deviceId, { cert: other.cert, key: other.key });
      await h.withTimeout(rogue.sendEvent(new Message('{}')), h.WAIT_MS, 'the send of a refused device');
    })(), /unauthori[sz]ed|not authorized|refused/i, 'a certificate with another thumbprint is refused');
    if (rogue) await h.closeQuietly(rogue);
    client = await h.openX509Client(tr, info.hubHost, deviceId, { cert: x509.cert, key: x509.key });
    await client.sendEvent(new Message(JSON.stringify({ tp: 1 })));
    const twin = (await registry.getTwin(deviceId)).responseBody;
    assert.equal(twin.authenticationType, 'selfSigned');
  });
}

{
  const tr = h.TRANSPORTS[0];
  test(`${tr.prefix}scenario 12: service SDK jobs: a scheduled method job and a twin update job`, { timeout: h.TEST_TIMEOUT_MS }, async (t) => {
    const { JobClient } = require('azure-iothub');
    const registry = Registry.fromConnectionString(serviceConnectionString('iothubowner'));
    const jobs = JobClient.fromConnectionString(serviceConnectionString('service'));
    const deviceId = h.uniqueId('conf-svcj');
    const created = (await registry.create({ deviceId })).responseBody;
    const info = h.loadInfo();
    let client;
    t.after(async () => {
      if (client) await h.closeQuietly(client);
      await registry.delete(deviceId).catch(() => {});
    });
    client = await h.openSasClient({ tr, deviceId, hub: info.hubHost, key: created.authentication.symmetricKey.primaryKey });
    const seen = [];
    client.onDeviceMethod('calibrate', (req, res) => {
      seen.push(req.payload);
      res.send(200, { ok: true }).catch(() => {});
    });
    await h.syncSubscriptions(client);

    const finished = async (jobId) => {
      for (const deadline = Date.now() + h.WAIT_MS; Date.now() < deadline; await new Promise((r) => setTimeout(r, 100))) {
        const job = (await jobs.getJob(jobId)).jobStatus;
        if (['completed', 'failed', 'cancelled'].includes(job.status)) return job;
      }
      assert.fail(`job ${jobId} did not finish`);
    };

    const methodJob = h.uniqueId('job-m');
    const scheduled = (await jobs.scheduleDeviceMethod(methodJob, `deviceId IN ['${deviceId}']`,
      { methodName: 'calibrate', payload: { level: 3 }, responseTimeoutInSeconds: 15 }, new Date(), 60)).jobStatus;
    assert.equal(scheduled.jobId, methodJob);
    const done = await finished(methodJob);
    assert.equal(done.status, 'completed', `method job ${JSON.stringify(done)}`);
    assert.equal(done.deviceJobStatistics.succeededCount, 1, 'the device answered');
    assert.deepEqual(seen, [{ level: 3 }], 'the device got the payload once');

    const twinJob = h.uniqueId('job-t');
    await jobs.scheduleTwinUpdate(twinJob, `deviceId = '${deviceId}'`,
      { etag: '*', tags: { calibrated: true }, properties: { desired: { level: 3 } } }, new Date(), 60);
    const twinDone = await finished(twinJob);
    assert.equal(twinDone.status, 'completed', `twin job ${JSON.stringify(twinDone)}`);
    const twin = (await registry.getTwin(deviceId)).responseBody;
    assert.equal(twin.tags.calibrated, true, 'the job set the tag');
    assert.equal(twin.properties.desired.level, 3, 'the job set the desired property');

    // A job scheduled for later is cancelled.
    const later = h.uniqueId('job-l');
    await jobs.scheduleDeviceMethod(later, `deviceId = '${deviceId}'`, { methodName: 'calibrate' }, new Date(Date.now() + 3600e3), 60);
    assert.equal((await jobs.cancelJob(later)).jobStatus.status, 'cancelled');
    assert.equal(seen.length, 1, 'the cancelled job did not run');
  });
}

{
  const tr = h.TRANSPORTS[0];
  test(`${tr.prefix}scenario 13: DigitalTwinClient: get, JSON Patch to desired, component and root commands`, { timeout: h.TEST_TIMEOUT_MS }, async (t) => {
    const { DigitalTwinClient, IoTHubTokenCredentials } = require('azure-iothub');
    const MODEL_ID = 'dtmi:iotcgo:conformance:TemperatureController;1';
    const dev = await h.provisionDevice(tr, 'conf-svcdt', MODEL_ID);
    const client = await h.openSasClient(dev);
    t.after(() => h.closeQuietly(client));
    const seen = [];
    client.onDeviceMethod('thermostat1*getMaxMinReport', (req, res) => {
      seen.push(req.methodName);
      res.send(200, { maxTemp: 30.5, since: req.payload }).catch(() => {});
    });
    client.onDeviceMethod('reboot', (req, res) => {
      seen.push(req.methodName);
      res.send(201, { delay: req.payload.delay }).catch(() => {});
    });
    const twin = await client.getTwin();
    await new Promise((resolve, reject) => twin.properties.reported.update(
      { serialNumber: 'SN-1', thermostat1: { __t: 'c', maxTempSinceLastReboot: 30.5 } }, (err) => (err ? reject(err) : resolve())));
    const desired = new Promise((resolve) => twin.on('properties.desired', (d) => { if (d.targetTemperature !== undefined) resolve(d); }));
    await h.syncSubscriptions(client);

    const dt = new DigitalTwinClient(new IoTHubTokenCredentials(serviceConnectionString('service')));
    const got = await dt.getDigitalTwin(dev.deviceId);
    const body = got._response.parsedBody;
    assert.equal(body.$dtId, dev.deviceId);
    assert.equal(body.$metadata.$model, MODEL_ID, 'the model id');
    assert.equal(body.serialNumber, 'SN-1', 'a root reported property');
    assert.equal(body.thermostat1.maxTempSinceLastReboot, 30.5, 'a component reported property');

    // With the etag of the GET (the pinned SDK's updateDigitalTwin without an etag throws in its
    // options handling: "Cannot convert undefined or null to object", whatever the server says).
    await dt.updateDigitalTwin(dev.deviceId, [{ op: 'add', path: '/targetTemperature', value: 21.5 }], got._response.parsedHeaders.eTag);
    const d = await h.withTimeout(desired, h.WAIT_MS, 'the desired patch at the device');
    assert.equal(d.targetTemperature, 21.5, 'the JSON Patch reached the device as a desired property');

    const since = '2024-01-01T00:00:00.000Z';
    const c1 = await dt.invokeComponentCommand(dev.deviceId, 'thermostat1', 'getMaxMinReport', since, { responseTimeoutInSeconds: 15 });
    assert.equal(c1._response.headers.get('x-ms-command-statuscode'), '200');
    assert.deepEqual(c1._response.parsedBody, { maxTemp: 30.5, since }, 'component command answer');
    const c2 = await dt.invokeCommand(dev.deviceId, 'reboot', { delay: 2 }, { responseTimeoutInSeconds: 15 });
    assert.equal(c2._response.headers.get('x-ms-command-statuscode'), '201');
    assert.deepEqual(c2._response.parsedBody, { delay: 2 }, 'root command answer');
    assert.deepEqual(seen, ['thermostat1*getMaxMinReport', 'reboot']);
  });
}
