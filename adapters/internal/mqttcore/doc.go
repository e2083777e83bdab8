// Package mqttcore is the MQTT 3.1.1 engine shared by the MQTT transport
// adapters (adapters/mqtt over TLS, adapters/mqttws over WebSockets): the
// Device Provisioning Service registration with polling and the IoT Hub
// session (telemetry, twin, direct methods, cloud-to-device messages), on
// top of github.com/eclipse/paho.mqtt.golang.
//
// An adapter supplies only a Dialer, the function that opens the byte
// stream (TLS over TCP, or a WebSocket) to a host; everything else, from
// the CONNECT username to the topic parsers, lives here.
//
// Paho is used the safe way: protocol 3.1.1 only, no automatic reconnect
// and no connect retry (the application owns the one reconnect loop), one
// new paho client per session, handlers that never block paho's router
// (inbound events go to an unbounded queue drained by a goroutine the
// session owns), and every wait selects on the token, the caller's context
// and the session's end, never token.Wait alone.
package mqttcore
