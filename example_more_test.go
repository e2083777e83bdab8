package iotc_test

import (
	"context"
	"log"
	"net/url"
	"os"
	"time"

	"github.com/iotc-go/iotc"
)

// A device behind a firewall: try MQTT on 8883 first and fall back to MQTT
// over WebSockets on 443, through an HTTP proxy. OnStatus sees the switch
// with ReasonTransportFallback. Compiled, not run (it needs IoT Central).
func ExampleConfig_fallback() {
	proxy, err := url.Parse(os.Getenv("IOTC_PROXY")) // e.g. http://user:pass@proxy:3128
	if err != nil {
		log.Fatal(err)
	}
	client, err := iotc.New(iotc.Config{
		DeviceID:   "gateway-7",
		IDScope:    os.Getenv("IOTC_ID_SCOPE"),
		Credential: iotc.DeviceKey(os.Getenv("IOTC_DEVICE_KEY")),
		Transport:  iotc.MQTT,
		Fallback:   []iotc.Transport{iotc.MQTTWebSockets},
		Proxy:      proxy,
		OnStatus: func(s iotc.Status) {
			if s.Reason == iotc.ReasonTransportFallback {
				log.Printf("falling back to %s: %v", s.Transport, s.Err)
			}
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := client.Connect(context.Background(), nil); err != nil {
		log.Fatal(err)
	}
	defer client.Close(context.Background())
}

// A writable property that takes a while to apply: answer 202 at once and
// report the final status later with AckProperty. Compiled, not run.
func ExampleClient_AckProperty() {
	client, err := iotc.New(iotc.Config{
		DeviceID:   "valve-3",
		IDScope:    os.Getenv("IOTC_ID_SCOPE"),
		Credential: iotc.GroupKey(os.Getenv("IOTC_GROUP_KEY")),
	})
	if err != nil {
		log.Fatal(err)
	}
	client.OnProperty(func(ctx context.Context, p iotc.Property) iotc.PropertyAck {
		go func() {
			time.Sleep(5 * time.Second) // move the valve
			ack := iotc.PropertyAck{Status: 200, Description: "valve moved"}
			if err := client.AckProperty(context.Background(), p, ack); err != nil {
				log.Println("final ack:", err)
			}
		}()
		return iotc.PropertyAck{Status: 202, Description: "moving"}
	})
	if err := client.Connect(context.Background(), nil); err != nil {
		log.Fatal(err)
	}
	defer client.Close(context.Background())
}

// Telemetry options: a component, application properties, a message id and
// the creation time; queued (offline) commands have their own handler.
// Compiled, not run.
func ExampleClient_SendTelemetry() {
	client, err := iotc.New(iotc.Config{
		DeviceID:        "thermostat-01",
		IDScope:         os.Getenv("IOTC_ID_SCOPE"),
		Credential:      iotc.GroupKey(os.Getenv("IOTC_GROUP_KEY")),
		CredentialStore: iotc.CredentialsFile("thermostat-01.json"), // restarts skip DPS
	})
	if err != nil {
		log.Fatal(err)
	}
	client.OnQueuedCommand(func(ctx context.Context, c iotc.Command) iotc.Outcome {
		log.Printf("queued command %s (component %q)", c.Name, c.Component)
		return iotc.Complete // iotc.Abandon: deliver it again later; iotc.Reject: never
	})
	ctx := context.Background()
	if err := client.Connect(ctx, nil); err != nil {
		log.Fatal(err)
	}
	defer client.Close(ctx)
	err = client.SendTelemetry(ctx, map[string]any{"temperature": 21.5},
		&iotc.TelemetryOptions{
			Component:    "thermostat1",
			Properties:   map[string]string{"alert": "high"},
			MessageID:    "reading-42",
			CreationTime: time.Now(),
		},
	)
	if err != nil {
		log.Println("send:", err)
	}
}

// A "reboot" command: the handler answers, then closes the client. Close
// called from inside a handler starts the shutdown and returns at once.
func ExampleClient_Close_fromHandler() {
	client, err := iotc.New(iotc.Config{
		DeviceID:   "thermostat-01",
		IDScope:    "0ne00ABCDEF",
		Credential: iotc.GroupKey(os.Getenv("IOTC_GROUP_KEY")),
	})
	if err != nil {
		log.Fatal(err)
	}
	rebooted := make(chan struct{})
	client.OnCommand(func(ctx context.Context, c iotc.Command) iotc.CommandResponse {
		if c.Name != "reboot" {
			return iotc.CommandResponse{Status: 404}
		}
		go func() {
			_ = client.Close(context.Background()) // waits for the handler to return
			close(rebooted)
		}()
		return iotc.CommandResponse{Status: 200, Payload: map[string]string{"status": "rebooting"}}
	})
	if err := client.Connect(context.Background(), nil); err != nil {
		log.Fatal(err)
	}
	<-rebooted
}

// Force a new registration with DPS (Python's connect(force_dps=True)),
// with custom allocation data, and read what DPS answered.
func ExampleConnectOptions() {
	client, err := iotc.New(iotc.Config{
		DeviceID:            "thermostat-01",
		IDScope:             "0ne00ABCDEF",
		Credential:          iotc.GroupKey(os.Getenv("IOTC_GROUP_KEY")),
		CredentialStore:     iotc.CredentialsFile("thermostat-01.json"),
		ProvisioningPayload: map[string]any{"site": "lab-3"},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close(context.Background())
	if err := client.Connect(context.Background(), &iotc.ConnectOptions{ForceProvisioning: true}); err != nil {
		log.Fatal(err)
	}
	log.Printf("DPS answered %s", client.ProvisioningPayload())
}
