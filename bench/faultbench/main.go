// Command faultbench runs the SDK against the emulator under faults for
// longer than go test does and prints what happened to every message:
// sent, acknowledged, failed, received by the emulator, lost
// (acknowledged, never received), duplicated, and the longest recovery
// from a fault to the next connection.
//
//	go run ./bench/faultbench                 # the whole matrix (about 4 min)
//	go run ./bench/faultbench -only kill -senders 20 -duration 1m
//
// It exits 1 when a run lost or failed a message.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/internal/faults"
)

func main() {
	only := flag.String("only", "", "run one scenario: kill, disconnect or renew (default: all, with 1 and 20 senders)")
	senders := flag.Int("senders", 0, "concurrent senders (default 1 and 20)")
	rate := flag.Float64("rate", 150, "total messages per second")
	duration := flag.Duration("duration", 30*time.Second, "how long each kill/disconnect scenario sends (renew runs 2 min)")
	transport := flag.String("transport", "mqtt", "mqtt or amqp")
	flag.Parse()

	tr := iotc.MQTT
	if *transport == "amqp" {
		tr = iotc.AMQP
	}
	type scenario struct {
		name string
		cfg  faults.Config
	}
	var runs []scenario
	counts := []int{1, 20}
	if *senders > 0 {
		counts = []int{*senders}
	}
	for _, n := range counts {
		base := faults.Config{Senders: n, Rate: *rate, Transport: tr, SendTimeout: 5 * time.Second}
		kill, disc, renew := base, base, base
		kill.KillEvery, kill.Duration = 2*time.Second, *duration
		disc.DisconnectEvery, disc.Duration = 2*time.Second, *duration
		renew.TokenTTL, renew.Duration = 10*time.Second, 2*time.Minute
		for _, s := range []scenario{{"kill", kill}, {"disconnect", disc}, {"renew", renew}} {
			if *only == "" || *only == s.name {
				s.name = fmt.Sprintf("%s/%d-senders", s.name, n)
				runs = append(runs, s)
			}
		}
	}
	bad := false
	for _, r := range runs {
		res, err := faults.Run(context.Background(), r.cfg)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", r.name, err)
			os.Exit(2)
		}
		verdict := "ok"
		if err := res.Check(); err != nil {
			verdict = "LOSSY"
			bad = true
		}
		fmt.Printf("%-22s %s %s\n", r.name, verdict, res)
		for _, e := range res.Errors {
			fmt.Printf("    error: %s\n", e)
		}
	}
	if bad {
		os.Exit(1)
	}
}
