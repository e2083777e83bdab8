package thermostat_test

import (
	"context"
	"fmt"
	"time"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/examples/thermostat/thermostat"
	"github.com/iotc-go/iotc/iotctest"
)

// The README's "Testing your device logic" snippet: the thermostat's logic
// against an in-memory hub, the test playing the operator.
func ExampleThermostat_Attach() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	since := time.Now().Add(-time.Hour)

	hub := iotctest.New()
	client, _ := iotc.New(hub.Config("thermostat-01"))
	defer client.Close(context.Background())
	thermostat.New(20).Attach(client) // your logic registers its handlers
	_ = client.Connect(ctx, nil)

	ack, _ := hub.SetProperty(ctx, "thermostat-01", "thermostat1", "targetTemperature", 50)
	fmt.Println(ack.Status, ack.Description, ack.Version)
	res, _ := hub.InvokeCommand(ctx, "thermostat-01", "thermostat1", "getMaxMinReport", since)
	fmt.Println(res.Status)
	_ = client.SendTelemetry(ctx, map[string]float64{"temperature": 20.5}, &iotc.TelemetryOptions{Component: "thermostat1"})
	sent := hub.Telemetry("thermostat-01") // every message, with component and properties
	fmt.Println(len(sent), sent[0].Component)
	// Output:
	// 400 targetTemperature must be between 5 and 35 2
	// 200
	// 1 thermostat1
}
