'use strict';
// Scenario 16: the official Event Hubs client (@azure/event-hubs, pinned) against the
// emulator's Event Hubs-compatible endpoint, unchanged: it takes the connection strings of
// the info file (eventHubsConnectionStrings) and connects to the hub host on 5671 (and over
// WebSockets on 443), as it does to Azure.
// (a) Device-to-cloud messages sent with azure-iot-device are read from the built-in endpoint
//     from an enqueued time, with their properties and IoT Hub's annotations;
// (b) event hub and partition properties; (c) a reader resumes after a sequence number;
// (d) a consumer group of one's own (made with --consumer-group) reads the same events;
// (e) a producer batch to a plain event hub (--event-hub logs) is read back;
// (f) the same over AMQP over WebSockets.

const test = require('node:test');
const assert = require('node:assert/strict');
const { EventHubConsumerClient, EventHubProducerClient, earliestEventPosition } = require('@azure/event-hubs');
const { Message } = require('azure-iot-device');
const h = require('../lib/helpers');

function ehConnectionString(entity) {
  const info = h.loadInfo();
  const all = info.eventHubsConnectionStrings || {};
  const name = entity || Object.keys(all).find((n) => all[n].includes('SharedAccessKeyName=service;'));
  assert.ok(name && typeof all[name] === 'string', `info file has the connection string of ${entity || 'the built-in endpoint'}`);
  assert.ok(all[name].startsWith(`Endpoint=sb://${info.hubHost}/;`) && all[name].endsWith(`;EntityPath=${name}`), `connection string of ${name}: ${all[name].replace(/SharedAccessKey=[^;]*/, 'SharedAccessKey=…')}`);
  return { name, cs: all[name] };
}

/** Reads n events of one partition from position with client, within WAIT_MS. */
function readEvents(client, partitionId, startPosition, n) {
  return readUntil(client, partitionId, startPosition, (got) => got.length >= n).then((got) => got.slice(0, n));
}

/** Reads events of one partition from position until done(events so far), within WAIT_MS. */
function readUntil(client, partitionId, startPosition, done) {
  return new Promise((resolve, reject) => {
    const got = [];
    let sub;
    const timer = setTimeout(() => {
      sub.close().finally(() => reject(new Error(`read ${got.length} events of partition ${partitionId}, not all it should hold`)));
    }, h.WAIT_MS);
    sub = client.subscribe(partitionId, {
      processEvents: async (events) => {
        got.push(...events);
        if (done(got)) {
          clearTimeout(timer);
          await sub.close();
          resolve(got);
        }
      },
      processError: async (err) => {
        clearTimeout(timer);
        await sub.close();
        reject(err);
      },
    }, { startPosition, maxBatchSize: 100, maxWaitTimeInSeconds: 1 });
  });
}

/** The partitions that hold events, with their properties. */
async function nonEmpty(client) {
  const out = {};
  for (const id of await client.getPartitionIds()) {
    const p = await client.getPartitionProperties(id);
    if (!p.isEmpty) out[id] = p;
  }
  return out;
}

function bodyText(body) {
  if (Buffer.isBuffer(body)) return body.toString('utf8');
  if (typeof body === 'string') return body;
  return JSON.stringify(body);
}

for (const ws of [false, true]) {
  const label = ws ? 'amqpws: ' : '';
  test(`${label}scenario 16: @azure/event-hubs reads the built-in endpoint: telemetry with annotations, properties, resume, own consumer group`, { timeout: h.TEST_TIMEOUT_MS * 2 }, async (t) => {
    const tr = h.TRANSPORTS.find((x) => x.id === 'mqtt') || h.TRANSPORTS[0];
    const dev = await h.provisionDevice(tr, 'conf-eh');
    const device = await h.openSasClient(dev);
    t.after(() => h.closeQuietly(device));
    const since = new Date(Date.now() - 5000);
    for (let i = 0; i < 3; i++) {
      const m = new Message(JSON.stringify({ i }));
      m.messageId = `eh-mid-${i}`;
      m.correlationId = `eh-corr-${i}`;
      m.contentType = 'application/json';
      m.contentEncoding = 'utf-8';
      m.properties.add('app', `v${i}`);
      await h.withTimeout(device.sendEvent(m), h.WAIT_MS, `message ${i} acknowledged`);
    }

    const { name, cs } = ehConnectionString();
    const opts = ws ? { webSocketOptions: { webSocket: require('ws') } } : {};
    const client = new EventHubConsumerClient('$Default', cs, opts);
    t.after(() => client.close());

    // (b) event hub and partition properties.
    const hub = await client.getEventHubProperties();
    assert.equal(hub.name, name);
    assert.deepEqual(hub.partitionIds, ['0', '1', '2', '3']);
    assert.ok(hub.createdOn instanceof Date);
    // Other tests send too: the device's partition is the one whose events name it.
    let pid;
    let events;
    for (const [id, p] of Object.entries(await nonEmpty(client))) {
      assert.equal(p.eventHubName, name);
      assert.equal(p.partitionId, id);
      assert.ok(p.lastEnqueuedSequenceNumber >= p.beginningSequenceNumber);
      assert.ok(p.lastEnqueuedOnUtc instanceof Date);
      // Other scenarios send too: read this partition from the start time up to the event
      // that was last when its properties were read.
      if (p.lastEnqueuedOnUtc < since) continue;
      const evs = await readUntil(client, id, { enqueuedOn: since }, (got) => got.some((e) => e.sequenceNumber >= p.lastEnqueuedSequenceNumber));
      const mine = evs.filter((e) => e.systemProperties['iothub-connection-device-id'] === dev.deviceId);
      if (mine.length > 0) {
        assert.equal(pid, undefined, 'a device\'s messages are in one partition');
        pid = id;
        events = mine;
      }
    }
    assert.ok(pid !== undefined, 'the device\'s messages were read from the built-in endpoint');
    // (a) the messages with their properties and annotations.
    assert.equal(events.length, 3);
    for (let i = 0; i < 3; i++) {
      const e = events[i];
      assert.deepEqual(JSON.parse(bodyText(e.body)), { i });
      assert.equal(e.messageId, `eh-mid-${i}`);
      assert.equal(e.correlationId, `eh-corr-${i}`);
      assert.equal(e.contentType, 'application/json');
      assert.equal(e.properties.app, `v${i}`);
      assert.ok(e.enqueuedTimeUtc >= since, 'x-opt-enqueued-time after the start');
      assert.equal(typeof e.sequenceNumber, 'number');
      assert.ok(e.offset !== undefined, 'x-opt-offset');
      const sp = e.systemProperties;
      assert.equal(sp['iothub-connection-device-id'], dev.deviceId);
      assert.equal(sp['iothub-message-source'], 'Telemetry');
      assert.ok(sp['iothub-connection-auth-method'], 'iothub-connection-auth-method');
      assert.ok(sp['iothub-connection-auth-generation-id'], 'iothub-connection-auth-generation-id');
      assert.ok(sp['iothub-enqueuedtime'], 'iothub-enqueuedtime');
      assert.equal(e.getRawAmqpMessage().properties.contentEncoding, 'utf-8');
      if (i > 0) assert.ok(e.sequenceNumber > events[i - 1].sequenceNumber, 'sequence numbers grow');
    }

    // (c) resume after the first message's sequence number.
    // (other devices' messages may share the partition)
    const rest = await readUntil(client, pid, { sequenceNumber: events[0].sequenceNumber },
      (got) => got.some((e) => e.messageId === 'eh-mid-1'));
    assert.equal(rest[0].sequenceNumber, events[0].sequenceNumber + 1, 'resumed right after the sequence number');
    assert.equal(rest.filter((e) => e.systemProperties['iothub-connection-device-id'] === dev.deviceId)[0].messageId, 'eh-mid-1');
    const incl = await readEvents(client, pid, { sequenceNumber: events[2].sequenceNumber, isInclusive: true }, 1);
    assert.equal(incl[0].messageId, 'eh-mid-2', 'inclusive start');

    // (d) a consumer group of one's own (--consumer-group conformance) reads the same events.
    const own = new EventHubConsumerClient('conformance', cs, opts);
    t.after(() => own.close());
    const isMine = (e) => e.systemProperties['iothub-connection-device-id'] === dev.deviceId;
    const ownEvents = await readUntil(own, pid, { sequenceNumber: events[0].sequenceNumber, isInclusive: true },
      (got) => got.filter(isMine).length >= 3);
    assert.equal(ownEvents[0].messageId, 'eh-mid-0', 'inclusive start in the own consumer group');
    assert.deepEqual(ownEvents.filter(isMine).map((e) => e.messageId), ['eh-mid-0', 'eh-mid-1', 'eh-mid-2']);
    // An unknown consumer group is refused.
    const nobody = new EventHubConsumerClient('nobody-' + h.uniqueId('cg'), cs, { ...opts, retryOptions: { maxRetries: 0 } });
    t.after(() => nobody.close());
    await assert.rejects(readEvents(nobody, pid, earliestEventPosition, 1), /not.?found|NotFound|consumer group/i);
  });

  test(`${label}scenario 16: @azure/event-hubs producer batch to a plain event hub`, { timeout: h.TEST_TIMEOUT_MS }, async (t) => {
    const { cs } = ehConnectionString('logs');
    const opts = ws ? { webSocketOptions: { webSocket: require('ws') } } : {};
    const producer = new EventHubProducerClient(cs, opts);
    t.after(() => producer.close());
    const key = h.uniqueId('pk');
    const batch = await producer.createBatch({ partitionKey: key });
    for (let i = 0; i < 5; i++) {
      assert.ok(batch.tryAdd({ body: { line: i, key }, properties: { n: i } }), `event ${i} fits the batch`);
    }
    await producer.sendBatch(batch);

    const consumer = new EventHubConsumerClient('$Default', cs, opts);
    t.after(() => consumer.close());
    let found = [];
    for (const [id, p] of Object.entries(await nonEmpty(consumer))) {
      const evs = await readEvents(consumer, id, earliestEventPosition, p.lastEnqueuedSequenceNumber - p.beginningSequenceNumber + 1);
      const mine = evs.filter((e) => e.partitionKey === key);
      if (mine.length > 0) {
        assert.equal(found.length, 0, 'one partition key, one partition');
        found = mine;
      }
    }
    assert.equal(found.length, 5, 'the batch was read back');
    found.forEach((e, i) => {
      assert.deepEqual(JSON.parse(bodyText(e.body)), { line: i, key });
      assert.equal(e.properties.n, i);
    });
  });
}
