// Package domain holds the pure model and rules of an Azure IoT Central
// device: credentials and SAS tokens, provisioning records, telemetry
// messages and their MQTT property bag, twins and the IoT Plug and Play
// writable-property acknowledgement, commands, connection status, errors and
// the reconnect backoff.
//
// It imports the standard library only. Both the device SDK and the local
// emulator use it, so every parser here treats its input as untrusted: it
// returns an error and never panics.
package domain
