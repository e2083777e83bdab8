// Package export is the emulator's IoT Central data export: destinations
// (webhook@v1, eventhubs@v1) and exports (sources telemetry, properties,
// deviceConnectivity, deviceLifecycle, deviceTemplateLifecycle, with a
// filter query and enrichments) as the data export API of api-version
// 2022-10-31-preview defines them, kept as application documents of the
// core, fed by the core's observer port, and delivered in IoT Central's
// export message format with retries and a status per destination and
// export. It imports the core and the official Event Hubs client, never a
// front-end.
package export
