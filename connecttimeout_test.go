package iotc_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/iotc-go/iotc"
)

// blackhole accepts TCP connections and never answers: every attempt to
// connect through it lasts until its connect timeout.
func blackhole(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// Config.ConnectTimeout bounds each provisioning and hub connect attempt
// of every transport: with 100 ms against a server that never answers,
// Connect fails with DeadlineExceeded while its own context (a minute)
// is still live. With the default 30 s it would outlast that context's
// first 20 s and fail on the context instead.
func TestConnectTimeoutBoundsEachAttempt(t *testing.T) {
	if _, err := iotc.New(iotc.Config{DeviceID: "d", IDScope: "0ne00000000", Credential: iotc.GroupKey("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="), ConnectTimeout: -time.Second}); !errors.Is(err, iotc.ErrInvalidConfig) {
		t.Fatalf("negative ConnectTimeout: %v", err)
	}
	port := blackhole(t)
	key := "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	for _, tr := range []iotc.Transport{iotc.MQTT, iotc.MQTTWebSockets, iotc.AMQP, iotc.AMQPWebSockets} {
		for _, what := range []string{"Provisioning", "Hub"} {
			t.Run(tr.String()+"/"+what, func(t *testing.T) {
				cfg := iotc.Config{
					DeviceID:         "slow-link",
					IDScope:          "0ne00000000",
					Credential:       iotc.GroupKey(key),
					ProvisioningHost: "127.0.0.1",
					Transport:        tr,
					Port:             port,
					ConnectTimeout:   100 * time.Millisecond,
					MaxAttempts:      1,
				}
				if what == "Hub" {
					cfg.IDScope = ""
					cfg.Credential = iotc.ConnectionString("HostName=127.0.0.1;DeviceId=slow-link;SharedAccessKey=" + key)
				}
				c, err := iotc.New(cfg)
				if err != nil {
					t.Fatal(err)
				}
				defer closeIOTC(t, c)
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				err = c.Connect(ctx, nil)
				if ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("Connect = %v (its context: %v), want the attempt cut by ConnectTimeout", err, ctx.Err())
				}
			})
		}
	}
}
