// Package amqphub is the IoT Hub and DPS application layer of the emulator
// over AMQP 1.0 (reference/protocol.md sections B.3, E, G.3, H.7–8), on top
// of the amqp1 server engine.
//
// A [Server] serves one AMQP connection per [Server.ServeConn] call and maps
// what the Azure IoT device SDKs (C, Node/rhea) do onto a [Backend], which
// the emulator implements over the state it shares with MQTT:
//
//   - authentication: SASL MSSBCBS or ANONYMOUS then CBS put-token on $cbs
//     (C SDK), no SASL then CBS (Node SDK), SASL PLAIN "{deviceId}@sas.{hub}"
//     with a device SAS token, SASL PLAIN "{scope}/registrations/{id}" with a
//     DPS SAS token, and X.509 by the TLS client certificate (with or
//     without SASL EXTERNAL). Tokens are renewed by another put-token; when
//     one expires without renewal the device's links are detached with
//     amqp:unauthorized-access and its session ends.
//   - links, addressed with or without "amqps://{host}", path compared
//     ignoring case: /devices/{id}/messages/events (telemetry),
//     /devices/{id}/messages/devicebound (cloud-to-device),
//     /devices/{id}/methods/devicebound (direct methods, uuid
//     correlation-id), /devices/{id}/twin (GET, PATCH reported, PUT/DELETE
//     desired notifications) and {scope}/registrations/{id} (DPS).
//
// A device's links are refused with amqp:unauthorized-access unless the
// connection holds a valid token or certificate for that device, so one
// device can never reach another's nodes.
package amqphub
