package emulator_test

import (
	"context"
	"fmt"
	"log"
	"strings"

	"github.com/iotc-go/iotc/emulator"
)

// Start a local IoT Central on free ports, as tests do. Devices provision
// with the group key at MQTTAddr() and trust CAPool(); operators use the
// Go methods or the REST API at RESTURL() with APIToken().
func ExampleStart() {
	e, err := emulator.Start(context.Background(), &emulator.Options{
		MQTTAddr: "127.0.0.1:0",
		RESTAddr: "127.0.0.1:0",
	})
	if err != nil {
		log.Fatal(err)
	}
	defer e.Close()
	fmt.Println(strings.HasPrefix(e.IDScope(), "0ne"), e.GroupKey() != "", strings.HasPrefix(e.RESTURL(), "https://"))
	key, err := e.CreateDevice("sensor-1")
	if err != nil {
		log.Fatal(err)
	}
	d, _ := e.Device("sensor-1")
	fmt.Println(d.ID, key != "", d.Provisioned)
	// Output:
	// true true true
	// sensor-1 true false
}
