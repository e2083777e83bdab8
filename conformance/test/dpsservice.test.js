'use strict';
// Scenario 14: the official DPS service SDK (azure-iot-provisioning-service, pinned) and the
// DPS device SDK over HTTPS (azure-iot-provisioning-device-http, pinned) against the emulator,
// unchanged: the service client reads the provisioningserviceowner connection string from the
// info file and talks HTTPS to the provisioning host on 443, as it does to Azure.
// (a) an individual symmetric-key enrollment with an initial twin: registration over HTTPS, the
// device (azure-iot-device-mqtt) reads the initial desired properties from its twin, the
// service sees the initial tags; a stale etag is refused (412); deleting the registration
// state forces a new assignment (initial twin applied again); (b) an X.509 individual
// enrollment registered over HTTPS and over every MQTT/AMQP provisioning transport, then
// connected with its certificate; (c) enrollment groups with symmetric keys and X.509 signing
// certificates, their registration states queried, the IoT Central REST API showing the same
// group; (d) bulk operations, paged queries, attestation-mechanism reads and the DPS error shape.

const test = require('node:test');
const assert = require('node:assert/strict');
const { ProvisioningServiceClient } = require('azure-iot-provisioning-service');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Http: ProvHttp } = require('azure-iot-provisioning-device-http');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
const { X509Security } = require('azure-iot-security-x509');
const { Registry } = require('azure-iothub');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Client } = require('azure-iot-device');
const h = require('../lib/helpers');

function dpsService() {
  const info = h.loadInfo();
  const cs = info.dpsConnectionString;
  assert.ok(typeof cs === 'string' && cs.startsWith(`HostName=${info.provisioningHost};SharedAccessKeyName=provisioningserviceowner;`),
    'info file has the DPS service connection string');
  return ProvisioningServiceClient.fromConnectionString(cs);
}

function registry() {
  return Registry.fromConnectionString(h.loadInfo().serviceConnectionStrings.iothubowner);
}

async function refused(promise, what) {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  assert.fail(`${what} succeeded; it must be refused`);
}

/** The DPS error body of a refused service call: {errorCode, trackingId, message}. */
function dpsError(err, status) {
  assert.equal(err.response && err.response.statusCode, status, `status of: ${err.message}`);
  const body = JSON.parse(err.responseBody);
  assert.equal(typeof body.errorCode, 'number', 'errorCode is numeric');
  assert.equal(Math.floor(body.errorCode / 1000), status, 'errorCode starts with the status');
  assert.ok(body.trackingId, 'trackingId');
  assert.ok(body.message, 'message');
  return body;
}

// Query.next() without an argument drops the continuation token it kept (SDK 1.11.2), so
// the queries below pass query.continuationToken themselves.

/**
 * runBulkEnrollmentOperation with a callback: the SDK (1.11.2) answers its promise form only
 * when a callback is given (`if (callback)` around the answer), so the promise never settles.
 */
function bulk(svc, op) {
  return new Promise((resolve, reject) => {
    svc.runBulkEnrollmentOperation(op, (err, result) => (err ? reject(err) : resolve(result)));
  });
}

async function registerHttp(registrationId, security, payload) {
  const info = h.loadInfo();
  const client = ProvisioningDeviceClient.create(info.provisioningHost, info.idScope, new ProvHttp(), security);
  if (payload !== undefined) client.setProvisioningPayload(payload);
  return h.withTimeout(client.register(), h.WAIT_MS, `DPS registration of ${registrationId} over HTTPS`);
}

async function deviceTwinDesired(cs, x509) {
  const client = Client.fromConnectionString(cs, Mqtt);
  try {
    if (x509) await client.setOptions(x509);
    await h.withTimeout(client.open(), h.WAIT_MS, 'hub connection');
    const twin = await h.withTimeout(client.getTwin(), h.WAIT_MS, 'getTwin');
    return twin.properties.desired;
  } finally {
    await h.closeQuietly(client);
  }
}

test('scenario 14a: individual symmetric-key enrollment with initialTwin over HTTPS; etags; registration state deleted forces a new assignment', { timeout: 60000 }, async () => {
  const svc = dpsService();
  const regId = h.uniqueId('conf-dps-ind');
  const site = h.uniqueId('site');
  const created = (await svc.createOrUpdateIndividualEnrollment({
    registrationId: regId,
    attestation: { type: 'symmetricKey' },
    initialTwin: { tags: { site }, properties: { desired: { fan: 'on', level: 3 } } },
    reprovisionPolicy: { updateHubAssignment: true, migrateDeviceData: false },
    provisioningStatus: 'enabled',
  })).responseBody;
  assert.equal(created.registrationId, regId);
  assert.ok(created.etag, 'an etag');
  const key = created.attestation.symmetricKey.primaryKey;
  assert.ok(key, 'keys were generated');
  assert.equal(created.reprovisionPolicy.migrateDeviceData, false);

  const got = (await svc.getIndividualEnrollment(regId)).responseBody;
  assert.equal(got.etag, created.etag);
  assert.equal(got.initialTwin.properties.desired.fan, 'on');
  const mech = (await svc.getIndividualEnrollmentAttestationMechanism(regId)).responseBody;
  assert.equal(mech.type, 'symmetricKey');
  assert.equal(mech.symmetricKey.primaryKey, key);

  // An update with the etag works and changes it; the old etag is then stale: 412.
  const updated = (await svc.createOrUpdateIndividualEnrollment({ ...got, capabilities: { iotEdge: false } })).responseBody;
  assert.notEqual(updated.etag, created.etag, 'an update changes the etag');
  const stale = await refused(svc.createOrUpdateIndividualEnrollment({ ...got }), 'a PUT with a stale etag');
  dpsError(stale, 412);
  const staleDel = await refused(svc.deleteIndividualEnrollment(regId, created.etag), 'a DELETE with a stale etag');
  dpsError(staleDel, 412);

  // Registration over HTTPS with the enrollment's key.
  const r1 = await registerHttp(regId, new SymmetricKeySecurityClient(regId, key));
  const info = h.loadInfo();
  assert.equal(r1.deviceId, regId);
  assert.equal(r1.assignedHub, info.hubHost);
  assert.equal(r1.substatus, 'initialAssignment');
  const cs = `HostName=${r1.assignedHub};DeviceId=${regId};SharedAccessKey=${key}`;
  let desired = await deviceTwinDesired(cs);
  assert.equal(desired.fan, 'on', 'the device sees the initial desired properties');
  assert.equal(desired.level, 3);
  const reg = registry();
  const twin = (await reg.getTwin(regId)).responseBody;
  assert.equal(twin.tags.site, site, 'the service sees the initial tags');

  // The service changes the twin; registering again keeps it (same assignment).
  await reg.updateTwin(regId, { properties: { desired: { fan: 'off' } } }, '*');
  const rs1 = (await svc.getDeviceRegistrationState(regId)).responseBody;
  assert.equal(rs1.status, 'assigned');
  assert.equal(rs1.deviceId, regId);
  const r2 = await registerHttp(regId, new SymmetricKeySecurityClient(regId, key));
  assert.equal(r2.substatus, 'reprovisionedToInitialAssignment');
  desired = await deviceTwinDesired(cs);
  assert.equal(desired.fan, 'off', 'a re-registration keeps the twin');

  // Deleting the registration state (stale etag refused first) forces a new assignment.
  const rs2 = (await svc.getDeviceRegistrationState(regId)).responseBody;
  dpsError(await refused(svc.deleteDeviceRegistrationState(regId, rs1.etag), 'a registration delete with a stale etag'), 412);
  await svc.deleteDeviceRegistrationState(regId, rs2.etag);
  dpsError(await refused(svc.getDeviceRegistrationState(regId), 'GET of a deleted registration state'), 404);
  const r3 = await registerHttp(regId, new SymmetricKeySecurityClient(regId, key));
  assert.equal(r3.substatus, 'initialAssignment', 'a new assignment');
  desired = await deviceTwinDesired(cs);
  assert.equal(desired.fan, 'on', 'the initial twin was applied again');

  // Disabled: the registration is refused with status disabled.
  await svc.createOrUpdateIndividualEnrollment({ ...(await svc.getIndividualEnrollment(regId)).responseBody, provisioningStatus: 'disabled' });
  const dis = await refused(registerHttp(regId, new SymmetricKeySecurityClient(regId, key)), 'registration of a disabled enrollment');
  assert.match(String(dis.message || dis), /disabled/i);

  await svc.deleteIndividualEnrollment(regId);
  dpsError(await refused(svc.getIndividualEnrollment(regId), 'GET of a deleted enrollment'), 404);
});

test('scenario 14b: X.509 individual enrollment registers over HTTPS, MQTT and AMQP and connects with its certificate', { timeout: 90000 }, async () => {
  const svc = dpsService();
  const regId = h.uniqueId('conf-dps-x509');
  const certs = h.makeCertificates(regId);
  const x509 = { cert: certs.cert, key: certs.key };
  const created = (await svc.createOrUpdateIndividualEnrollment({
    registrationId: regId,
    attestation: { type: 'x509', x509: { clientCertificates: { primary: { certificate: certs.cert } } } },
    initialTwin: { properties: { desired: { mode: 'x509' } } },
  })).responseBody;
  const info = created.attestation.x509.clientCertificates.primary.info;
  assert.match(info.subjectName, new RegExp(`CN=${regId}`), 'certificate info subject');
  assert.match(info.sha1Thumbprint, /^[0-9A-F]{40}$/, 'sha1 thumbprint');
  const mech = (await svc.getIndividualEnrollmentAttestationMechanism(regId)).responseBody;
  assert.equal(mech.type, 'x509');

  const r = await registerHttp(regId, new X509Security(regId, x509));
  assert.equal(r.deviceId, regId);
  for (const tr of h.TRANSPORTS) {
    const rr = await h.provisionWithX509(tr, regId, x509);
    assert.equal(rr.deviceId, regId, `X.509 individual enrollment over ${tr.title}`);
  }
  const desired = await deviceTwinDesired(`HostName=${r.assignedHub};DeviceId=${regId};x509=true`, x509);
  assert.equal(desired.mode, 'x509', 'the X.509 device sees its initial twin');

  // Another certificate with the same CN is not the enrollment's.
  const rogue = h.makeCertificates(regId);
  await refused(registerHttp(regId, new X509Security(regId, { cert: rogue.cert, key: rogue.key })), 'a registration with another certificate');
  await svc.deleteIndividualEnrollment(regId);
});

test('scenario 14c: enrollment groups (symmetric key, X.509 signing certificate), registration states query, the REST API view', { timeout: 60000 }, async () => {
  const svc = dpsService();
  const groupId = h.uniqueId('conf-dps-grp');
  const grp = (await svc.createOrUpdateEnrollmentGroup({
    enrollmentGroupId: groupId,
    attestation: { type: 'symmetricKey' },
    initialTwin: { tags: { fleet: groupId }, properties: { desired: { interval: 30 } } },
    provisioningStatus: 'enabled',
  })).responseBody;
  assert.equal(grp.enrollmentGroupId, groupId);
  const gkey = grp.attestation.symmetricKey.primaryKey;
  assert.ok(gkey && grp.etag);

  // The IoT Central REST API shows the same group.
  const view = await h.restOk('GET', `/api/enrollmentGroups/${groupId}`, undefined, 200);
  assert.equal(view.id, groupId);
  assert.equal(view.enabled, true);

  const ids = [h.uniqueId('conf-dps-g1'), h.uniqueId('conf-dps-g2'), h.uniqueId('conf-dps-g3')];
  for (const id of ids) {
    const dk = h.deriveKey(gkey, id);
    const r = await registerHttp(id, new SymmetricKeySecurityClient(id, dk));
    assert.equal(r.deviceId, id);
  }
  const desired = await deviceTwinDesired(`HostName=${h.loadInfo().hubHost};DeviceId=${ids[0]};SharedAccessKey=${h.deriveKey(gkey, ids[0])}`);
  assert.equal(desired.interval, 30, 'a group device sees the group initial twin');

  // Registration states of the group, two per page.
  const q = svc.createEnrollmentGroupDeviceRegistrationStateQuery({ query: '*' }, groupId, 2);
  const seen = [];
  while (q.hasMoreResults) {
    const page = (await q.next(q.continuationToken)).responseBody;
    assert.ok(page.length <= 2, 'page size honoured');
    seen.push(...page.map((x) => x.registrationId));
  }
  assert.deepEqual(seen.sort(), [...ids].sort(), 'every registration state of the group, paged');

  // X.509 group with the CA as its signing certificate.
  const xg = h.uniqueId('conf-dps-xgrp');
  const devId = h.uniqueId('conf-dps-xdev');
  const certs = h.makeCertificates(devId);
  const xgrp = (await svc.createOrUpdateEnrollmentGroup({
    enrollmentGroupId: xg,
    attestation: { type: 'x509', x509: { signingCertificates: { primary: { certificate: certs.caCert } } } },
  })).responseBody;
  assert.match(xgrp.attestation.x509.signingCertificates.primary.info.subjectName, /conformance CA/);
  const r = await registerHttp(devId, new X509Security(devId, { cert: certs.cert, key: certs.key }));
  assert.equal(r.deviceId, devId);
  const rs = (await svc.getDeviceRegistrationState(devId)).responseBody;
  assert.equal(rs.status, 'assigned');

  const gq = svc.createEnrollmentGroupQuery({ query: '*' }, 100);
  const groups = [];
  while (gq.hasMoreResults) groups.push(...(await gq.next(gq.continuationToken)).responseBody.map((g) => g.enrollmentGroupId));
  assert.ok(groups.includes(groupId) && groups.includes(xg), 'the group query lists both groups');

  // Deleting a group with a stale etag: 412; then deleted.
  dpsError(await refused(svc.deleteEnrollmentGroup(groupId, '"stale"'), 'a group delete with a stale etag'), 412);
  await svc.deleteEnrollmentGroup(groupId);
  await svc.deleteEnrollmentGroup(xg);
  dpsError(await refused(svc.getEnrollmentGroup(groupId), 'GET of a deleted group'), 404);
});

test('scenario 14d: bulk operations, paged enrollment query, validation errors in the DPS error shape', { timeout: 60000 }, async () => {
  const svc = dpsService();
  const ids = [h.uniqueId('conf-dps-b1'), h.uniqueId('conf-dps-b2'), h.uniqueId('conf-dps-b3')];
  const res = (await bulk(svc, {
    mode: 'create',
    enrollments: ids.map((registrationId) => ({ registrationId, attestation: { type: 'symmetricKey' } })),
  }));
  assert.equal(res.isSuccessful, true, JSON.stringify(res.errors));
  const again = (await bulk(svc, {
    mode: 'create',
    enrollments: [{ registrationId: ids[0], attestation: { type: 'symmetricKey' } }],
  }));
  assert.equal(again.isSuccessful, false, 'creating an existing enrollment fails');
  assert.equal(again.errors[0].registrationId, ids[0]);
  assert.equal(again.errors[0].errorCode, 409201);

  const q = svc.createIndividualEnrollmentQuery({ query: '*' }, 1);
  const seen = [];
  let pages = 0;
  while (q.hasMoreResults) {
    const page = (await q.next(q.continuationToken)).responseBody;
    pages++;
    assert.ok(page.length <= 1);
    seen.push(...page.map((e) => e.registrationId));
  }
  assert.ok(pages >= 3, 'one enrollment per page');
  for (const id of ids) assert.ok(seen.includes(id), `query lists ${id}`);

  const del = (await bulk(svc, {
    mode: 'delete',
    enrollments: ids.map((registrationId) => ({ registrationId })),
  }));
  assert.equal(del.isSuccessful, true, JSON.stringify(del.errors));

  // Validation: a bad key, a custom allocation, an unknown attestation.
  const bad = await refused(svc.createOrUpdateIndividualEnrollment({ registrationId: h.uniqueId('conf-dps-bad'),
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: 'not base64!', secondaryKey: 'x' } } }), 'a bad key');
  dpsError(bad, 400);
  const custom = await refused(svc.createOrUpdateIndividualEnrollment({ registrationId: h.uniqueId('conf-dps-bad'),
    attestation: { type: 'symmetricKey' }, allocationPolicy: 'custom' }), 'a custom allocation');
  assert.match(dpsError(custom, 400).message, /custom allocation/);
});
