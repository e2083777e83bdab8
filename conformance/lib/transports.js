'use strict';
// The transports every scenario runs over: the official SDK's device transport and the
// matching provisioning transport for each protocol the emulator serves.
//
// Test names: the MQTT tests keep their original names ("scenario 3: ..."); the others are
// prefixed with the transport id ("amqpws: scenario 3: ...").
//
// IOTC_CONFORMANCE_TRANSPORTS=mqtt,amqp (comma-separated ids) runs a subset; by default all
// four run. An unknown id stops the run with an error instead of running nothing.

const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { Amqp, AmqpWs } = require('azure-iot-device-amqp');
const ProvMqtt = require('azure-iot-provisioning-device-mqtt');
const ProvAmqp = require('azure-iot-provisioning-device-amqp');

/**
 * id: short name used in test names and IOTC_CONFORMANCE_TRANSPORTS.
 * title: what the scenario names say ("over MQTT over WebSockets").
 * Device / Provisioning: the SDK's transport constructors, used unchanged.
 * infoAddr: the emulator info field naming the listener this transport connects to
 *   (the SDK itself always dials the standard port: 8883, 443 or 5671).
 * amqp: true for the AMQP transports (twin, methods and C2D run over separate links).
 */
const ALL = [
  { id: 'mqtt', title: 'MQTT', prefix: '', Device: Mqtt, Provisioning: ProvMqtt.Mqtt, infoAddr: 'mqttAddr', port: 8883, amqp: false },
  { id: 'mqttws', title: 'MQTT over WebSockets', prefix: 'mqttws: ', Device: MqttWs, Provisioning: ProvMqtt.MqttWs, infoAddr: 'webSocketAddr', port: 443, amqp: false },
  { id: 'amqp', title: 'AMQP', prefix: 'amqp: ', Device: Amqp, Provisioning: ProvAmqp.Amqp, infoAddr: 'amqpAddr', port: 5671, amqp: true },
  { id: 'amqpws', title: 'AMQP over WebSockets', prefix: 'amqpws: ', Device: AmqpWs, Provisioning: ProvAmqp.AmqpWs, infoAddr: 'webSocketAddr', port: 443, amqp: true },
];

function selected() {
  const env = (process.env.IOTC_CONFORMANCE_TRANSPORTS || '').trim();
  if (env === '') return ALL;
  const ids = env.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean);
  for (const id of ids) {
    if (!ALL.some((t) => t.id === id)) {
      throw new Error(`IOTC_CONFORMANCE_TRANSPORTS: unknown transport "${id}"; known: ${ALL.map((t) => t.id).join(', ')}`);
    }
  }
  return ALL.filter((t) => ids.includes(t.id));
}

/** The transports this run covers (all four unless IOTC_CONFORMANCE_TRANSPORTS says otherwise). */
const TRANSPORTS = selected();

module.exports = { ALL_TRANSPORTS: ALL, TRANSPORTS };
