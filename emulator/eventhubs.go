package emulator

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/amqphub"
	"github.com/iotc-go/iotc/emulator/internal/core"
	"github.com/iotc-go/iotc/emulator/internal/eventhubs"
)

// Defaults of EventHubsOptions.
const (
	// DefaultEventHubPartitions is the partition count of every event hub.
	DefaultEventHubPartitions = eventhubs.DefaultPartitions
	// DefaultEventHubRetentionCount is how many events a partition keeps.
	DefaultEventHubRetentionCount = eventhubs.DefaultRetentionCount
	// DefaultEventHubRetention is how long an event is kept.
	DefaultEventHubRetention = eventhubs.DefaultRetentionAge
)

// EventHubsOptions configure the Event Hubs-compatible endpoint the
// emulator serves on its AMQP listener (AMQPAddr, and AMQP over
// WebSockets on WebSocketAddr at /$servicebus/websocket): the hub's
// built-in endpoint, which carries every device-to-cloud message, and
// plain event hubs producers send to.
type EventHubsOptions struct {
	// HubName is the built-in endpoint's event hub name (EntityPath).
	// Default: the first label of HubHost ("localhost" by default).
	HubName string
	// Entities are plain event hubs (e.g. "logs"), for producers, signed
	// with the namespace policy RootManageSharedAccessKey. Default none.
	// Names are 1 to 256 letters, digits, '.', '_' and '-'; Start returns
	// ErrInvalid for another name or one given twice.
	Entities []string
	// Partitions is the partition count of every entity: 0 means 4 (IoT
	// Hub's default), at most 32. A device's messages always go to the
	// same partition.
	Partitions int
	// ConsumerGroups are made on every entity besides $Default.
	ConsumerGroups []string
	// RetentionCount is how many events a partition keeps (the oldest
	// go first); 0 means 10000.
	RetentionCount int
	// RetentionAge is how long an event is kept; 0 means 24h (IoT Hub's
	// default retention of the built-in endpoint: 1 day).
	RetentionAge time.Duration
	// TwinChangeEvents adds IoT Hub's twin change events to the built-in
	// endpoint: every change of a device's desired or reported properties,
	// with iothub-message-source twinChangeEvents, opType updateTwin and
	// the patch with its $version in the body. Default false (a hub routes
	// them there only when told to).
	TwinChangeEvents bool
	// LifecycleEvents adds IoT Hub's device lifecycle events to the
	// built-in endpoint: a device created (through DPS, the REST API, the
	// IoT Hub service API or the Go API) or deleted, opType
	// createDeviceIdentity or deleteDeviceIdentity, with the device's twin
	// in the body. Default false.
	LifecycleEvents bool
}

// startEventHubs makes the endpoint over the (loaded) core.
func (e *Emulator) startEventHubs() error {
	o := e.cfg.eventHubs
	name := o.HubName
	if name == "" {
		name, _, _ = strings.Cut(e.cfg.hubHost, ".")
	}
	ep, err := eventhubs.New(e.core, eventhubs.Options{
		Host: e.cfg.hubHost, HubName: name, Entities: o.Entities, Partitions: o.Partitions,
		ConsumerGroups: o.ConsumerGroups, RetentionCount: o.RetentionCount, RetentionAge: o.RetentionAge,
		TwinChangeEvents: o.TwinChangeEvents, LifecycleEvents: o.LifecycleEvents, Durable: e.store != nil, Logger: e.log.With("component", "eventhubs"),
	})
	if err != nil {
		return fmt.Errorf("emulator: Event Hubs endpoint: %w", err)
	}
	e.eh = ep
	return nil
}

// eventHubsConn is amqphub.Options.EventHubs.
func (e *Emulator) eventHubsConn() amqphub.EventHubsConn { return e.eh.NewConn() }

// EventHubsClientTLS is a TLS configuration for azeventhubs clients
// (ConsumerClientOptions.TLSConfig, ProducerClientOptions.TLSConfig): it
// trusts the emulator's CA and names the hub host as ServerName, since
// go-amqp would otherwise check the certificate against "host:port" when
// EventHubsEndpoint holds a port.
func (e *Emulator) EventHubsClientTLS() *tls.Config {
	return &tls.Config{RootCAs: e.CAPool(), ServerName: e.cfg.hubHost, MinVersion: tls.VersionTLS12}
}

// EventHubNames lists the Event Hubs-compatible endpoint's entities, the
// built-in endpoint (the hub name) first, then EventHubsOptions.Entities.
func (e *Emulator) EventHubNames() []string { return e.eh.Entities() }

// BuiltinEventHub is the built-in endpoint's event hub name (the
// EntityPath of its connection string).
func (e *Emulator) BuiltinEventHub() string { return e.eh.BuiltinName() }

// EventHubsEndpoint is the "sb://{hub host}[:port]/" the endpoint's
// connection strings name: the port of AMQPAddr when it is not 5671 (the
// official clients connect to 5671 when none is given; azeventhubs and
// @azure/event-hubs take a port in Endpoint).
func (e *Emulator) EventHubsEndpoint() string {
	host := e.cfg.hubHost
	if addr := e.AMQPAddr(); addr != "" {
		if _, port, err := net.SplitHostPort(addr); err == nil && port != "5671" {
			host = net.JoinHostPort(host, port)
		}
	}
	return "sb://" + host + "/"
}

// EventHubsConnectionString is the connection string of an entity
// ("Endpoint=sb://...;SharedAccessKeyName=...;SharedAccessKey=...;EntityPath={entity}"),
// as azeventhubs and @azure/event-hubs take it: the built-in endpoint's
// with the hub's "service" policy (ServiceConnect: read), a plain event
// hub's with RootManageSharedAccessKey (send and read). The clients need
// the emulator's CA (CAFile, CAPool) to trust its certificate. It returns
// an error wrapping ErrNotFound for an unknown entity.
func (e *Emulator) EventHubsConnectionString(entity string) (string, error) {
	var name string
	for _, n := range e.eh.Entities() {
		if strings.EqualFold(n, entity) {
			name = n
		}
	}
	if name == "" {
		return "", fmt.Errorf("%w: event hub %q", core.ErrNotFound, entity)
	}
	policy, key := eventhubs.NamespacePolicy, e.eh.NamespaceKey()
	if name == e.eh.BuiltinName() {
		policy, key = "", ""
		for _, p := range e.core.Policies() {
			if p.Name == "service" || (policy == "" && p.Rights&core.RightServiceConnect != 0) {
				policy, key = p.Name, p.PrimaryKey
			}
		}
	}
	return fmt.Sprintf("Endpoint=%s;SharedAccessKeyName=%s;SharedAccessKey=%s;EntityPath=%s", e.EventHubsEndpoint(), policy, key, name), nil
}

// EventHubConsumerGroups lists an entity's consumer groups, $Default
// first. It returns an error wrapping ErrNotFound for an unknown entity.
func (e *Emulator) EventHubConsumerGroups(entity string) ([]string, error) {
	return e.eh.ConsumerGroups(entity)
}

// CreateConsumerGroup adds a consumer group to an entity (kept in DataDir
// when there is one); creating one that exists is no error. It returns an
// error wrapping ErrNotFound for an unknown entity, ErrInvalid for a bad
// name (1 to 256 letters, digits, '.', '_', '-', or '$' first).
func (e *Emulator) CreateConsumerGroup(entity, group string) error {
	return e.eh.CreateConsumerGroup(entity, group)
}
