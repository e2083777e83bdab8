// Package emulator runs a local Azure IoT Central in-process: the Device
// Provisioning Service and IoT Hub over MQTT 3.1.1/TLS, MQTT and AMQP over
// WebSockets (/$iothub/websocket) and AMQP 1.0/TLS, each listener serving
// DPS and the hub alike, IoT Hub's service API, the DPS service API and DPS
// over HTTPS on the hub host (the WebSocket listener), and an operator REST
// API over HTTPS shaped like IoT Central's. It is what every test of the
// SDK talks to, and what cmd/iotc-emulator serves.
//
// Start it with Start and stop it with Close:
//
//	emu, err := emulator.Start(ctx, &emulator.Options{MQTTAddr: "127.0.0.1:0"})
//	defer emu.Close()
//	// devices: scope emu.IDScope(), group key emu.GroupKey(), trust emu.CAFile()
//
// State is in memory unless Options.DataDir is set: then the ID scope,
// enrollment groups, devices with their keys, twins, queued
// cloud-to-device messages and the API token survive a restart. The
// emulator enforces IoT Hub's rules as seen on the wire: SAS signature and
// expiry, X.509 chains against an enrollment group's CA, per-device topic
// and link permissions (a violation drops the connection), one connection
// per device, 256 KiB telemetry, 32 KiB twin sections, 50 queued
// cloud-to-device messages per device. It keeps the last
// Options.TelemetryHistory telemetry messages of each device (see
// TelemetryHistory and GET /api/emulator/devices/{id}/telemetry).
//
// Inside, a protocol-free core holds the model (registry, enrollment
// groups, DPS decisions, twins, commands, queues, telemetry, persistence);
// the MQTT, AMQP, WebSocket and REST front-ends each reach it through a
// small interface. The emulator shares no SAS, key-derivation or
// property-bag code with the SDK, so a bug cannot hide on both sides.
package emulator
