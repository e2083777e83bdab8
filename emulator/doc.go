// Package emulator runs a local Azure IoT Central in-process: the Device
// Provisioning Service and IoT Hub over MQTT 3.1.1/TLS on one listener
// (told apart by the CONNECT user name), and an operator REST API over
// HTTPS. It is what every test of the SDK talks to, and what
// cmd/iotc-emulator serves.
//
// Start it with Start and stop it with Close:
//
//	emu, err := emulator.Start(ctx, &emulator.Options{MQTTAddr: "127.0.0.1:0"})
//	defer emu.Close()
//	// devices: scope emu.IDScope(), group key emu.GroupKey(), trust emu.CAFile()
//
// State is in memory and lost on Close. The emulator enforces IoT Hub's
// rules as seen on the wire: SAS signature and expiry, X.509 chains against
// an enrollment group's CA, per-device topic permissions (a violation drops
// the connection), one connection per device, 256 KiB telemetry, 32 KiB twin
// sections, 50 queued cloud-to-device messages per device.
package emulator
