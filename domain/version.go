package domain

// Version is the SDK's version (semantic versioning; see CHANGELOG.md).
// Every transport announces it to DPS and the hub as ClientProduct,
// before the application's product info.
const Version = "0.1.0"

// ClientProduct is the client identity the transports announce (MQTT
// DeviceClientType and DPS ClientVersion, AMQP com.microsoft:client-version).
const ClientProduct = "iotc-go/" + Version
