package iotc_test

// The README's Go snippets, verbatim: TestReadmeSnippetsCompiled checks
// that every ```go block of README.md appears in this file, so that each
// one compiles.

import (
	"context"
	"fmt"
	"log"
	"net/url"
	"os"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/emulator"
	"github.com/iotc-go/iotc/examples/thermostat/thermostat"
	"github.com/iotc-go/iotc/iotctest"
)

func runDevice(ctx context.Context) error {
	client, err := iotc.New(iotc.Config{
		DeviceID:   "thermostat-01",
		IDScope:    "0ne00ABCDEF",
		Credential: iotc.GroupKey(os.Getenv("IOTC_GROUP_KEY")), // or DeviceKey, X509Files, X509PEM, ConnectionString
		ModelID:    "dtmi:com:example:Thermostat;1",
		Transport:  iotc.MQTT,
	})
	if err != nil {
		return err // ErrInvalidConfig: a missing field, a key that is not base64, an unreadable certificate, ...
	}
	defer client.Close(context.Background())

	client.OnProperty(func(ctx context.Context, p iotc.Property) iotc.PropertyAck {
		var v float64
		if err := p.Unmarshal(&v); err != nil {
			return iotc.PropertyAck{Status: 400, Description: "not a number"}
		}
		return iotc.PropertyAck{Status: 200, Description: "applied"}
	})
	client.OnCommand(func(ctx context.Context, c iotc.Command) iotc.CommandResponse {
		return iotc.CommandResponse{Status: 200, Payload: map[string]any{"ok": true}}
	})

	if err := client.Connect(ctx, nil); err != nil {
		return err // ErrUnauthorized (refused credentials), *ProvisioningError (bad scope), ...
	}
	if err := client.SendTelemetry(ctx, map[string]any{"temperature": 21.5}, &iotc.TelemetryOptions{Component: "thermostat1"}); err != nil {
		return err
	}
	return client.ReportProperties(ctx, map[string]any{"maxTempSinceLastReboot": 21.5}, nil)
}

// Example_readmeTesting is the README's iotctest snippet.
func Example_readmeTesting() {
	ctx := context.Background()
	since := time.Now().Add(-time.Hour)

	hub := iotctest.New()
	client, _ := iotc.New(hub.Config("thermostat-01"))
	thermostat.New(20).Attach(client) // your logic registers its handlers
	_ = client.Connect(ctx, nil)

	ack, _ := hub.SetProperty(ctx, "thermostat-01", "thermostat1", "targetTemperature", 50)
	// ack.Status == 400, ack.Description says why, ack.Version is the desired $version
	res, _ := hub.InvokeCommand(ctx, "thermostat-01", "thermostat1", "getMaxMinReport", since)
	sent := hub.Telemetry("thermostat-01") // every message, with component and properties

	_, _, _ = ack, res, sent
	_ = client.Close(ctx)
}

// Example_readmeWebSockets is the README's firewall and proxy snippets.
func Example_readmeWebSockets() {
	client, err := iotc.New(iotc.Config{
		DeviceID:   "thermostat-01",
		IDScope:    "0ne00ABCDEF",
		Credential: iotc.GroupKey(os.Getenv("IOTC_GROUP_KEY")),
		Transport:  iotc.MQTTWebSockets, // port 443
	})
	_, _ = client, err

	var cfg iotc.Config
	cfg.Transport = iotc.MQTT
	cfg.Fallback = []iotc.Transport{iotc.MQTTWebSockets}

	proxy, _ := url.Parse("http://user:password@proxy.example.com:3128")
	cfg.Transport = iotc.MQTTWebSockets
	cfg.Proxy = proxy
}

// readmeOutbox is the README's EnqueueTelemetry snippet (compiled, not run:
// it needs a writable /var/lib).
func readmeOutbox(ctx context.Context) {
	client, _ := iotc.New(iotc.Config{ /* ... */ Outbox: iotc.OutboxConfig{Dir: "/var/lib/mydevice/outbox"}})
	err := client.EnqueueTelemetry(ctx, map[string]any{"temperature": 21.5}, nil)
	// errors.Is(err, iotc.ErrOutboxFull): at Outbox.Limit; nothing stored was dropped
	fmt.Println(client.OutboxStats()) // waiting; delivered, expired, rejected
	_ = err
}

var _ = readmeOutbox

// docs/emulator.md, the Event Hubs-compatible endpoint: a consumer of the
// built-in endpoint of an emulator on any port.
func readBuiltinEndpoint(emu *emulator.Emulator) *azeventhubs.ConsumerClient {
	cs, _ := emu.EventHubsConnectionString(emu.BuiltinEventHub())
	c, _ := azeventhubs.NewConsumerClientFromConnectionString(cs, "", azeventhubs.DefaultConsumerGroup,
		&azeventhubs.ConsumerClientOptions{TLSConfig: emu.EventHubsClientTLS()})
	return c
}

// readmeUploadFile is docs/fileupload.md's UploadFile snippet (compiled,
// not run: it needs a connected client and a file).
func readmeUploadFile(ctx context.Context, client *iotc.Client) (iotc.UploadResult, error) {
	f, err := os.Open("device.log")
	// ...
	st, _ := f.Stat()
	res, err := client.UploadFile(ctx, "logs/device.log", f, st.Size(), &iotc.UploadOptions{
		ContentType: "text/plain",
		BlockSize:   4 << 20, // default 4 MiB
		Concurrency: 4,       // default 4 blocks in flight
		Progress:    func(n int64) { log.Printf("%d bytes read", n) },
	})
	return res, err
}

// readmeBatch is docs/fileupload.md's SendTelemetryBatch snippet.
func readmeBatch(ctx context.Context, client *iotc.Client) error {
	err := client.SendTelemetryBatch(ctx, []iotc.BatchMessage{
		{Payload: map[string]any{"temperature": 21.5}},
		{Payload: map[string]any{"speed": 3}, Options: &iotc.TelemetryOptions{Component: "motor", MessageID: "m-42"}},
	})
	return err
}

var _, _ = readmeUploadFile, readmeBatch
