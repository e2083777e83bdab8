package iotctest_test

import (
	"context"
	"fmt"
	"time"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/iotctest"
)

// A unit test of device logic with no network: the device refuses
// targets outside 5..35 °C, and the test plays the operator.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hub := iotctest.New()
	client, err := iotc.New(hub.Config("thermostat-01"))
	if err != nil {
		panic(err)
	}
	defer client.Close(ctx)
	client.HandleProperty("", "targetTemperature", func(_ context.Context, p iotc.Property) iotc.PropertyAck {
		var t float64
		if err := p.Unmarshal(&t); err != nil || t < 5 || t > 35 {
			return iotc.PropertyAck{Status: 400, Description: "out of range"}
		}
		return iotc.PropertyAck{Status: 200}
	})
	client.HandleCommand("", "reboot", func(context.Context, iotc.Command) iotc.CommandResponse {
		return iotc.CommandResponse{Status: 202, Payload: map[string]string{"status": "rebooting"}}
	})
	if err := client.Connect(ctx, nil); err != nil {
		panic(err)
	}

	ack, _ := hub.SetProperty(ctx, "thermostat-01", "", "targetTemperature", 50)
	fmt.Println("target 50:", ack.Status, ack.Description)
	res, _ := hub.InvokeCommand(ctx, "thermostat-01", "", "reboot", nil)
	fmt.Println("reboot:", res.Status, string(res.Payload))
	_ = client.SendTelemetry(ctx, map[string]float64{"temperature": 21.5}, nil)
	sent := hub.Telemetry("thermostat-01")
	fmt.Println("telemetry:", string(sent[0].Body))
	// Output:
	// target 50: 400 out of range
	// reboot: 202 {"status":"rebooting"}
	// telemetry: {"temperature":21.5}
}
