// Command quickstart runs a whole IoT Central on this machine and a device
// against it: it starts the emulator in-process on free ports, provisions a
// thermostat with the emulator's group key (trusting the emulator's CA),
// sends telemetry, reports a property, then receives a writable property
// and a command made through the emulator, printing each step. It exits 0
// on success, 2 for a bad flag and 1 with a message on failure.
//
//	go run ./examples/quickstart                     # MQTT over TLS
//	go run ./examples/quickstart -transport amqpws   # mqtt, mqttws, amqp or amqpws
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/emulator"
)

const (
	deviceID = "quickstart-thermostat"
	modelID  = "dtmi:com:example:Thermostat;1"
)

func main() {
	fs := flag.NewFlagSet("quickstart", flag.ContinueOnError)
	name := fs.String("transport", "mqtt", "transport: mqtt, mqttws, amqp or amqpws")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		os.Exit(2)
	}
	tr, err := transport(*name)
	if err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(2)
	}
	if err := run(tr); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart failed:", err)
		os.Exit(1)
	}
	fmt.Println("quickstart: all steps passed")
}

// transport parses a -transport value.
func transport(name string) (iotc.Transport, error) {
	for _, t := range []iotc.Transport{iotc.MQTT, iotc.MQTTWebSockets, iotc.AMQP, iotc.AMQPWebSockets} {
		if t.String() == name {
			return t, nil
		}
	}
	return 0, fmt.Errorf("unknown transport %q: want mqtt, mqttws, amqp or amqpws", name)
}

// listener is the emulator address that serves tr.
func listener(emu *emulator.Emulator, tr iotc.Transport) string {
	switch tr {
	case iotc.MQTTWebSockets, iotc.AMQPWebSockets:
		return emu.WebSocketAddr()
	case iotc.AMQP:
		return emu.AMQPAddr()
	}
	return emu.MQTTAddr()
}

func run(tr iotc.Transport) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	emu, err := emulator.Start(ctx, &emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-"})
	if err != nil {
		return fmt.Errorf("start the emulator: %w", err)
	}
	defer emu.Close()
	host, portText, err := net.SplitHostPort(listener(emu, tr))
	if err != nil {
		return fmt.Errorf("emulator address: %w", err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return fmt.Errorf("emulator port: %w", err)
	}
	fmt.Printf("1. emulator running: %s on %s, ID scope %s\n", tr, listener(emu, tr), emu.IDScope())

	client, err := iotc.New(iotc.Config{
		DeviceID:         deviceID,
		IDScope:          emu.IDScope(),
		Credential:       iotc.GroupKey(emu.GroupKey()),
		ModelID:          modelID,
		Transport:        tr,
		ProvisioningHost: host,
		Port:             port,
		RootCAs:          emu.CAPool(), // the emulator's CA is trusted explicitly
		OnStatus:         func(s iotc.Status) { fmt.Println("   status:", s) },
	})
	if err != nil {
		return fmt.Errorf("configure the device: %w", err)
	}
	defer client.Close(context.Background())

	properties := make(chan iotc.Property, 1)
	client.OnProperty(func(_ context.Context, p iotc.Property) iotc.PropertyAck {
		var target float64
		if err := p.Unmarshal(&target); err != nil {
			return iotc.PropertyAck{Status: 400, Description: "targetTemperature must be a number"}
		}
		properties <- p
		return iotc.PropertyAck{Status: 200, Description: "target applied"}
	})
	client.OnCommand(func(_ context.Context, c iotc.Command) iotc.CommandResponse {
		var delay int
		_ = c.Unmarshal(&delay)
		fmt.Printf("   device: command %q received with delay %d\n", c.Name, delay)
		return iotc.CommandResponse{Status: 200, Payload: map[string]any{"rebooting": true, "delay": delay}}
	})

	if err := client.Connect(ctx, nil); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	fmt.Printf("2. device %q provisioned with the group key and connected over %s\n", client.DeviceID(), tr)

	received, stop := emu.WatchTelemetry(deviceID)
	defer stop()
	if err := client.SendTelemetry(ctx, map[string]any{"temperature": 21.5}, nil); err != nil {
		return fmt.Errorf("send telemetry: %w", err)
	}
	select {
	case msg := <-received:
		fmt.Printf("3. telemetry sent; the emulator received %s\n", msg.Body)
	case <-ctx.Done():
		return errors.New("the emulator did not receive the telemetry")
	}

	if err := client.ReportProperties(ctx, map[string]any{"maxTempSinceLastReboot": 21.5}, nil); err != nil {
		return fmt.Errorf("report a property: %w", err)
	}
	_, reported, err := emu.Twin(deviceID)
	if err != nil {
		return fmt.Errorf("read the twin: %w", err)
	}
	fmt.Printf("4. property reported; the twin holds maxTempSinceLastReboot=%v\n", reported["maxTempSinceLastReboot"])

	if err := emu.UpdateProperties(ctx, deviceID, "", map[string]any{"targetTemperature": 23.5}); err != nil {
		return fmt.Errorf("set a writable property: %w", err)
	}
	select {
	case p := <-properties:
		fmt.Printf("5. writable property %s=%s received (version %d); the handler answered 200\n", p.Name, p.Value, p.Version)
	case <-ctx.Done():
		return errors.New("the writable property did not reach the device")
	}

	if err := emu.WaitSubscribed(ctx, deviceID, emulator.TopicMethods); err != nil {
		return fmt.Errorf("wait for the command subscription: %w", err)
	}
	res, err := emu.InvokeCommand(ctx, deviceID, "", "reboot", 5, 10*time.Second)
	if err != nil {
		return fmt.Errorf("invoke a command: %w", err)
	}
	if res.Status != 200 {
		return fmt.Errorf("command answered %d: %s", res.Status, res.Payload)
	}
	fmt.Printf("6. command reboot answered %d %s\n", res.Status, res.Payload)

	if err := client.Close(ctx); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	fmt.Println("7. device disconnected")
	return nil
}
