'use strict';
// Scenario 16: file upload. The official device SDK's uploadToBlob (azure-iot-device, pinned)
// asks the hub host for a SAS URI (POST /devices/{id}/files on 443), uploads the stream with
// @azure/storage-blob to the blob URL the hub returned (the emulator's embedded blob endpoint,
// trusted through NODE_EXTRA_CA_CERTS like any Azure host), and notifies the hub
// (POST /devices/{id}/files/notifications/{correlationId}); the official service SDK's
// file notification receiver (azure-iothub Client.getFileNotificationReceiver, AMQP
// /messages/serviceBound/filenotifications) gets the notification, and the blob read back
// with @azure/storage-blob and the storage connection string holds the bytes sent.

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { Readable } = require('node:stream');
const { Registry, Client: ServiceClient } = require('azure-iothub');
const { BlobServiceClient } = require('@azure/storage-blob');
const h = require('../lib/helpers');

function serviceConnectionString(policy) {
  const cs = h.loadInfo().serviceConnectionStrings[policy];
  assert.ok(typeof cs === 'string' && cs.includes(`SharedAccessKeyName=${policy};`), `info file has the ${policy} connection string`);
  return cs;
}

for (const tr of h.TRANSPORTS) {
  test(`${tr.prefix}scenario 16: uploadToBlob, the notification at the service's file notification receiver, the blob read back`, { timeout: h.TEST_TIMEOUT_MS }, async (t) => {
    const info = h.loadInfo();
    assert.ok(info.storageConnectionString, 'the info file has the storage connection string');
    const registry = Registry.fromConnectionString(serviceConnectionString('iothubowner'));
    const service = ServiceClient.fromConnectionString(serviceConnectionString('service'));
    const deviceId = h.uniqueId('conf-upload');
    const created = (await registry.create({ deviceId })).responseBody;
    let client;
    t.after(async () => {
      if (client) await h.closeQuietly(client);
      await service.close().catch(() => {});
      await registry.delete(deviceId).catch(() => {});
    });
    client = await h.openSasClient({ tr, deviceId, hub: info.hubHost, key: created.authentication.symmetricKey.primaryKey });

    await service.open();
    const receiver = (await service.getFileNotificationReceiver()).result;
    const notes = [];
    const waiting = [];
    receiver.on('message', (m) => {
      notes.push(JSON.parse(m.data.toString()));
      receiver.complete(m, () => {});
      waiting.forEach((w) => w());
    });
    const noteFor = (blobName) => new Promise((resolve) => {
      const check = () => { const n = notes.find((x) => x.blobName === blobName); if (n) resolve(n); };
      waiting.push(check);
      check();
    });

    // 6 MiB: more than the SDK's 4 MiB buffer, so Put Block and Put Block List.
    const data = crypto.randomBytes(6 * 1024 * 1024 + 17);
    const name = `logs/${tr.id}.bin`;
    const blobName = `${deviceId}/${name}`;
    const notified = noteFor(blobName);
    await h.withTimeout(client.uploadToBlob(name, Readable.from([data]), data.length), h.WAIT_MS, 'uploadToBlob');

    const note = await h.withTimeout(notified, h.WAIT_MS, 'the file upload notification');
    assert.equal(note.deviceId, deviceId);
    assert.equal(note.blobSizeInBytes, data.length, 'the notification has the blob size');
    assert.ok(note.blobUri.endsWith(`/${blobName}`), `blob URI ${note.blobUri}`);
    assert.ok(!Number.isNaN(Date.parse(note.enqueuedTimeUtc)) && !Number.isNaN(Date.parse(note.lastUpdatedTime)), 'times');

    const blobs = BlobServiceClient.fromConnectionString(info.storageConnectionString);
    const container = note.blobUri.split('/').slice(-(blobName.split('/').length + 1))[0];
    const got = await blobs.getContainerClient(container).getBlobClient(blobName).downloadToBuffer();
    assert.ok(got.equals(data), 'the blob holds the bytes uploaded');

    // A notification for an unknown correlation id is refused (404), as IoT Hub does.
    const err = await client.notifyBlobUploadStatus('no-such-correlation-id', true, 200, 'ok').then(() => null, (e) => e);
    assert.ok(err, 'an unknown correlation id is refused');
  });
}
