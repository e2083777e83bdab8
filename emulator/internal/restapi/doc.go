// Package restapi serves the operator REST API of the local IoT Central
// emulator. Its routes, JSON bodies and error shapes follow the Azure IoT
// Central data-plane REST API, version 2022-07-31, so that scripts written for
// IoT Central run against the emulator unchanged. The state behind the API is
// reached through the Backend interface, which the emulator implements; this
// package holds no state of its own and starts no goroutines.
//
// Every request must carry the API token in the Authorization header, either
// as the whole header value (as IoT Central API tokens are sent) or after a
// "Bearer " prefix. A missing or wrong token is answered 401. The optional
// api-version query parameter is accepted with any value and ignored.
//
// Routes (all JSON in and out):
//
//	GET   /api/devices                                          {"value":[Device...]}
//	GET   /api/devices/{id}                                     Device
//	GET   /api/devices/{id}/credentials                         DeviceCredentials
//	GET   /api/devices/{id}/properties                          properties view
//	PATCH /api/devices/{id}/properties                          202, properties view
//	GET   /api/devices/{id}/components/{c}/properties           component view
//	PATCH /api/devices/{id}/components/{c}/properties           202, component view
//	POST  /api/devices/{id}/commands/{name}                     201, CommandInvocation
//	POST  /api/devices/{id}/components/{c}/commands/{name}      201, CommandInvocation
//	POST  /api/devices/{id}/messages                            202 (emulator extension)
//	GET   /api/devices/{id}/telemetry                           {"value":[TelemetryMessage...]} (emulator extension)
//	GET   /api/devices/{id}/telemetry/{name}                    TelemetryValue
//	GET   /api/devices/{id}/components/{c}/telemetry/{name}     TelemetryValue
//	GET   /api/enrollmentGroups                                 {"value":[EnrollmentGroup...]}
//	GET   /api/enrollmentGroups/{id}                            EnrollmentGroup
//	PUT   /api/enrollmentGroups/{id}                            EnrollmentGroup
//
// The properties view shows, for every property, the value the device
// reported (the "value" of a writable-property acknowledgement) or, when the
// device has reported nothing for it, the desired value. Components appear in
// the root view as nested objects marked "__t":"c". A "$metadata" object per
// level carries desiredValue, desiredVersion, ackVersion, ackCode,
// ackDescription and lastUpdateTime where known. PATCH sends the body as a
// desired-properties patch and answers with the view in which the patched
// properties show their new desired values.
//
// Emulator extensions, not in IoT Central:
//
//   - POST .../commands/{name}?queue=true queues the command for an offline
//     device instead of failing with 404 DeviceNotOnline. The backend
//     delivers it as a cloud-to-device message carrying the method-name
//     application property, as IoT Central does for commands marked "queue
//     if offline". The answer is 201 {"request": ..., "queued": true}.
//   - POST /api/devices/{id}/messages sends a plain cloud-to-device message:
//     body {"data": string or any JSON, "properties": {"key": "value"}}; a
//     string is sent as its bytes, other JSON as its compact encoding.
//   - GET /api/devices/{id}/telemetry lists the telemetry messages the
//     emulator kept for the device, oldest first, each with its time,
//     component, message id, correlation id, content type and encoding,
//     application and system properties, and body ("data" when JSON, else
//     "dataBase64"). Query parameters: since (RFC 3339; messages received
//     strictly after it), component (only that component's messages; empty
//     for the root component) and limit (the newest n of the selection).
//   - Device has a "connected" field.
//
// Errors are JSON {"error":{"code","message","requestId","time"}} with the
// status that matches: 400 BadRequest (malformed JSON, bad parameters), 401
// Unauthorized, 404 NotFound (unknown route or resource) or DeviceNotOnline,
// 405 MethodNotAllowed, 403 DeviceMaximumQueueDepthExceeded, 413
// RequestEntityTooLarge (bodies over MaxBodyBytes), 500 InternalServerError
// and 504 GatewayTimeout. Tokens and keys never reach the log.
package restapi
