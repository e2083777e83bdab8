'use strict';
// Fault injection, over every transport: the device sends a telemetry message whose
// application properties ask the hub for a KillTcp fault, exactly as the official SDKs'
// end-to-end tests ask Azure IoT Hub (AzIoTHub_FaultOperationType, ...CloseReason,
// ...DelayInSecs, ...DurationInSecs). The hub acknowledges the message, drops the device's
// connection after the delay (the SDK transport reports 'disconnect'), and accepts the
// device again: a message sent afterwards reaches the hub, and the device shows connected.

const test = require('node:test');
const assert = require('node:assert/strict');
const { Message } = require('azure-iot-device');
const h = require('../lib/helpers');

function faultMessage(kind) {
  const msg = new Message(JSON.stringify({ fault: kind }));
  msg.contentType = 'application/json';
  msg.contentEncoding = 'utf-8';
  msg.properties.add('AzIoTHub_FaultOperationType', kind);
  msg.properties.add('AzIoTHub_FaultOperationCloseReason', 'boom');
  msg.properties.add('AzIoTHub_FaultOperationDelayInSecs', '1');
  msg.properties.add('AzIoTHub_FaultOperationDurationInSecs', '5');
  return msg;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

for (const tr of h.TRANSPORTS) {
  test(`${tr.prefix}fault injection: KillTcp drops the connection and the hub accepts it again`, { timeout: h.TEST_TIMEOUT_MS * 2 }, async (t) => {
    const dev = await h.provisionDevice(tr, 'conf-fault');
    const client = await h.openSasClient(dev);
    t.after(() => h.closeQuietly(client));
    // The SDK's transport (an internal field of the pinned azure-iot-device version)
    // emits 'disconnect' when the hub drops the connection.
    const transport = client._transport;
    assert.ok(transport && typeof transport.on === 'function', 'the SDK client exposes its transport');
    const dropped = h.waitForEvent(transport, 'disconnect');
    client.on('error', () => {}); // a dropped connection may surface here too

    const sent = await h.withTimeout(client.sendEvent(faultMessage('KillTcp')), h.WAIT_MS, 'fault message acknowledgement');
    assert.equal(sent.constructor.name, 'MessageEnqueued', 'the hub acknowledged the fault message before the fault');
    await dropped;
    const hist = await h.restOk('GET', `/api/emulator/devices/${dev.deviceId}/telemetry`);
    assert.equal(hist.value.length, 1, 'the hub kept the fault message');
    assert.equal(hist.value[0].properties.AzIoTHub_FaultOperationType, 'KillTcp', 'fault type property as sent');

    // Accepted again: reopen when the SDK has not reconnected by itself, then send.
    const deadline = Date.now() + h.WAIT_MS;
    for (;;) {
      try {
        await h.withTimeout(client.open(), 5000, 'reopen');
        const after = new Message(JSON.stringify({ afterFault: 1 }));
        after.contentType = 'application/json';
        after.contentEncoding = 'utf-8';
        await h.withTimeout(client.sendEvent(after), 5000, 'telemetry after the fault');
        break;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`no connection accepted after the fault: ${err && err.message}`);
        await sleep(500);
      }
    }
    await h.pollRest(`/api/devices/${dev.deviceId}/telemetry/afterFault`, (b) => b.value === 1, 'telemetry after the fault');
    const d = await h.restOk('GET', `/api/emulator/devices/${dev.deviceId}/connection`);
    assert.equal(d.connected, true, 'the device is connected again');
  });
}
