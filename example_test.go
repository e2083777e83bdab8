package iotc_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/emulator"
)

// This example connects to a real IoT Central application. It needs the
// application's ID scope and group key, so it is compiled but not run.
func ExampleNew() {
	client, err := iotc.New(iotc.Config{
		DeviceID:   "thermostat-01",
		IDScope:    os.Getenv("IOTC_ID_SCOPE"),
		Credential: iotc.GroupKey(os.Getenv("IOTC_GROUP_KEY")),
		ModelID:    "dtmi:com:example:Thermostat;1",
		Logger:     slog.Default(),
		OnStatus:   func(s iotc.Status) { log.Println("status:", s) },
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	client.OnProperty(func(ctx context.Context, p iotc.Property) iotc.PropertyAck {
		var target float64
		if err := p.Unmarshal(&target); err != nil {
			return iotc.PropertyAck{Status: 400, Description: "not a number"}
		}
		return iotc.PropertyAck{Status: 200, Description: "applied"}
	})
	client.OnCommand(func(ctx context.Context, c iotc.Command) iotc.CommandResponse {
		return iotc.CommandResponse{Status: 200, Payload: map[string]any{"accepted": true}}
	})
	if err := client.Connect(ctx, nil); err != nil {
		log.Fatal(err)
	}
	defer client.Close(ctx)
	err = client.SendTelemetry(ctx, map[string]any{"temperature": 21.5}, &iotc.TelemetryOptions{Component: "thermostat1"})
	if errors.Is(err, iotc.ErrNotConnected) {
		log.Println("offline; try again later")
	}
}

// Credentials can also be an X.509 certificate, a device key or a hub
// connection string.
func ExampleX509Files() {
	_, err := iotc.New(iotc.Config{
		IDScope:    "0ne00ABCDEF",
		Credential: iotc.X509Files("device.pem", "device-key.pem", ""),
	})
	fmt.Println(err != nil) // the files do not exist here
	// Output: true
}

// This example runs a whole IoT Central locally: the device provisions
// with the emulator's group key, sends telemetry and answers a writable
// property and a command that the "operator" makes through the emulator.
func Example_emulator() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	emu, err := emulator.Start(ctx, &emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-"})
	if err != nil {
		log.Fatal(err)
	}
	defer emu.Close()
	host, portStr, _ := net.SplitHostPort(emu.MQTTAddr())
	port, _ := strconv.Atoi(portStr)

	client, err := iotc.New(iotc.Config{
		DeviceID:         "example-device",
		IDScope:          emu.IDScope(),
		Credential:       iotc.GroupKey(emu.GroupKey()),
		ModelID:          "dtmi:com:example:Thermostat;1",
		ProvisioningHost: host,
		Port:             port,
		RootCAs:          emu.CAPool(), // trust the emulator's CA explicitly
	})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close(ctx)
	applied := make(chan float64, 1)
	client.OnProperty(func(ctx context.Context, p iotc.Property) iotc.PropertyAck {
		var v float64
		_ = p.Unmarshal(&v)
		applied <- v
		return iotc.PropertyAck{Status: 200, Description: "applied"}
	})
	client.OnCommand(func(ctx context.Context, c iotc.Command) iotc.CommandResponse {
		return iotc.CommandResponse{Status: 200, Payload: map[string]string{"command": c.Name}}
	})
	if err := client.Connect(ctx, nil); err != nil {
		log.Fatal(err)
	}
	fmt.Println("connected:", client.IsConnected())

	received, stop := emu.WatchTelemetry("example-device")
	defer stop()
	if err := client.SendTelemetry(ctx, map[string]any{"temperature": 21.5}, nil); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("telemetry: %s\n", (<-received).Body)

	if err := emu.UpdateProperties(ctx, "example-device", "", map[string]any{"targetTemperature": 23.5}); err != nil {
		log.Fatal(err)
	}
	fmt.Println("property applied:", <-applied)

	if err := emu.WaitSubscribed(ctx, "example-device", emulator.TopicMethods); err != nil {
		log.Fatal(err)
	}
	res, err := emu.InvokeCommand(ctx, "example-device", "", "reboot", map[string]int{"delay": 1}, 10*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("command: %d %s\n", res.Status, res.Payload)
	// Output:
	// connected: true
	// telemetry: {"temperature":21.5}
	// property applied: 23.5
	// command: 200 {"command":"reboot"}
}
