// Package restapi serves the operator REST API of the local IoT Central
// emulator. Its routes, JSON bodies and error shapes follow the Azure IoT
// Central data-plane REST API, version 2022-07-31, so that scripts written for
// IoT Central run against the emulator unchanged. The state behind the API is
// reached through the Backend interface, which the emulator implements; this
// package holds no state of its own: jobs, scheduled jobs, users,
// organizations, relationships and cloud property values are JSON documents
// kept through the optional DocBackend (the core's application documents,
// persisted with --data-dir). Its background work is the job runner (one
// goroutine per running job, see jobrunner.go) and the scheduler (one
// goroutine once a scheduled job exists, see scheduledjobs.go); both read
// Options.Clock and stop when the Backend's Done channel closes.
//
// Every request must carry the API token as the whole Authorization header
// value (as IoT Central API tokens are sent); "Bearer <token>" is accepted
// only with Options.AllowBearer. A missing or wrong token is answered 401.
// Options.Token is an App Administrator; with a TokenBackend, the API
// tokens created through /api/apiTokens are accepted too, with their roles
// enforced (403 Forbidden; see permit in tokens.go).
// The api-version query parameter is required and must be APIVersion
// (400 MissingApiVersionParameter / InvalidApiVersionParameter otherwise).
// Lists are paged (Options.PageSize, nextLink with $skiptoken). The device
// and template lists take the OData options IoT Central documents for them
// ($filter, $orderby, $top: see odata.go); the other lists refuse them
// 400. Devices, groups and templates carry an etag computed from their
// JSON; a write whose If-Match header or body etag is not the current one
// is answered 412 PreconditionFailed.
//
// Routes (all JSON in and out; see emulator/README.md for the full table
// of IoT Central operations, served or not):
//
//	GET                  /api/devices                                       {"value":[Device...],"nextLink"}
//	GET PUT PATCH DELETE /api/devices/{id}                                  Device
//	GET PUT PATCH DELETE /api/devices/{id}/attestation                      symmetric-key attestation
//	GET                  /api/devices/{id}/components                       {"value":[{"@type":"Component","name"}]}
//	GET                  /api/devices/{id}/credentials                      DeviceCredentials
//	GET PUT PATCH        /api/devices/{id}/properties                       properties view; writes 202 {"$metadata"}
//	GET PUT PATCH        /api/devices/{id}/components/{c}/properties        component view; writes 202 {"$metadata"}
//	GET POST             /api/devices/{id}/commands/{name}                  history; 201 CommandInvocation
//	GET POST             /api/devices/{id}/components/{c}/commands/{name}   history; 201 CommandInvocation
//	GET                  /api/devices/{id}/telemetry/{name}                 TelemetryValue
//	GET                  /api/devices/{id}/components/{c}/telemetry/{name}  TelemetryValue
//	GET                  /api/deviceTemplates                               {"value":[template...]}
//	GET PUT PATCH DELETE /api/deviceTemplates/{id}                          template
//	GET                  /api/apiTokens                                     {"value":[APIToken...]}
//	GET PUT DELETE       /api/apiTokens/{id}                                APIToken (token text on PUT only)
//	GET                  /api/roles, /api/roles/{id}                        Role
//	GET                  /api/deviceGroups                                  {"value":[DeviceGroup...]}
//	GET PUT PATCH DELETE /api/deviceGroups/{id}                             DeviceGroup
//	GET                  /api/deviceGroups/{id}/devices                     {"value":[Device...]}
//	GET                  /api/jobs                                          {"value":[Job...]}
//	GET PUT              /api/jobs/{id}                                     Job (PUT creates and starts it)
//	GET                  /api/jobs/{id}/devices                             {"value":[{"id","status"}...]}
//	POST                 /api/jobs/{id}/stop, /api/jobs/{id}/resume         204
//	PUT                  /api/jobs/{id}/rerun/{rerunId}                     Job (the failed devices)
//	GET                  /api/scheduledJobs                                 {"value":[ScheduledJob...]}
//	GET PUT PATCH DELETE /api/scheduledJobs/{id}                            ScheduledJob
//	GET                  /api/scheduledJobs/{id}/jobs                       {"value":[Job...]}
//	GET                  /api/users, /api/organizations                     {"value":[...]}
//	GET PUT PATCH DELETE /api/users/{id}, /api/organizations/{id}           User, Organization
//	GET                  /api/devices/{id}/relationships                    {"value":[DeviceRelationship...]}
//	GET PUT PATCH DELETE /api/devices/{id}/relationships/{rel}              DeviceRelationship
//	GET                  /api/devices/{id}/modules[/{m}/components]         {"value":[...]} (with a ModuleBackend, else 501)
//	GET PUT PATCH        /api/devices/{id}/modules/{m}/[components/{c}/]properties
//	GET POST             /api/devices/{id}/modules/{m}/[components/{c}/]commands/{name}
//	GET                  /api/devices/{id}/modules/{m}/[components/{c}/]telemetry/{name}
//	GET                  /api/enrollmentGroups                              {"value":[EnrollmentGroup...]}
//	GET PUT PATCH DELETE /api/enrollmentGroups/{id}                         EnrollmentGroup
//	GET PUT DELETE       /api/enrollmentGroups/{id}/certificates/{entry}    {"verified","certificate","info"}
//	POST                 /api/enrollmentGroups/{id}/certificates/{entry}/generateVerificationCode
//	POST                 /api/enrollmentGroups/{id}/certificates/{entry}/verify
//
// Emulator extensions, all under /api/emulator:
//
//	GET                  /api/emulator/devices/{id}/connection              {"id","connected"}
//	POST                 /api/emulator/devices/{id}/messages                202
//	GET                  /api/emulator/devices/{id}/telemetry               history
//	POST DELETE          /api/emulator/devices/{id}/faults                  202, 204
//	POST                 /api/emulator/devices/{id}/[components/{c}/]commands/{name}/queue  201
//	GET                  /api/emulator/stats                                (with Options.Stats)
//
// Their old paths (/api/devices/{id}/messages, /telemetry, /faults and
// ?queue= on a command) answer 308 with the new path in Location, for one
// release.
//
// The properties view shows, for every property, the value the device
// reported (the "value" of a writable-property acknowledgement) or, when the
// device has reported nothing for it, the desired value. Components appear in
// the root view as nested objects. A "$metadata" object per
// level carries desiredValue, desiredVersion, ackVersion, ackCode,
// ackDescription and lastUpdateTime where known. PATCH sends the body as a
// desired-properties patch (root members naming a component of the device
// template, or marked "__t":"c", or shown as a component by the twin, patch
// that component); PUT also deletes the writable properties the body lacks.
//
// What the extensions do:
//
//   - .../commands/{name}/queue queues the command as a cloud-to-device
//     message carrying the method-name application property, as IoT
//     Central does for a command its template marks "durable" ("Queue if
//     offline"); a command so marked in the device's template is queued by
//     the ordinary POST too (201 without a response). The queue answer is
//     201 {"request": ..., "queued": true}.
//   - POST .../messages sends a plain cloud-to-device message:
//     body {"data": string or any JSON, "properties": {"key": "value"}}; a
//     string is sent as its bytes, other JSON as its compact encoding.
//   - GET .../telemetry lists the telemetry messages the
//     emulator kept for the device, oldest first, each with its time,
//     component, message id, correlation id, content type and encoding,
//     application and system properties, and body ("data" when JSON, else
//     "dataBase64"). Query parameters: since (RFC 3339; messages received
//     strictly after it), component (only that component's messages; empty
//     for the root component) and limit (the newest n of the selection).
//   - GET .../connection tells whether the device holds a hub connection
//     (IoT Central's device body has no such field).

// With a device template, names are checked: an unknown component,
// property or command is 404, a read-only property 422.
//
// Errors are JSON {"error":{"code","message","requestId","time"}} (time in
// RFC 1123) with the status that matches: 400 BadRequest (not JSON, bad path
// or query parameters), 422 UnprocessableEntity (a well-formed body or value
// refused), 401 Unauthorized, 404 NotFound (unknown route or resource) or
// DeviceNotOnline, 405 MethodNotAllowed, 409 Conflict, 412
// PreconditionFailed, 308 MovedPermanently (a moved extension), 403
// DeviceMaximumQueueDepthExceeded, 413 RequestEntityTooLarge (bodies over
// MaxBodyBytes), 500 InternalServerError and 504 GatewayTimeout. Messages
// never name the emulator's packages. Tokens and keys never reach the log.
package restapi
