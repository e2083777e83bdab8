package iotc_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/iotc-go/iotc"
)

// TestProxyRefusalEndsConnect: a proxy answering 401 or 407 to CONNECT
// ends Connect with ErrInvalidConfig over both WebSocket transports: it is
// never retried as a transient failure (Connect would otherwise run into
// its deadline).
func TestProxyRefusalEndsConnect(t *testing.T) {
	t.Parallel()
	emu := startEmulator(t)
	for _, status := range []int{http.StatusUnauthorized, http.StatusProxyAuthRequired} {
		for _, tr := range []iotc.Transport{iotc.MQTTWebSockets, iotc.AMQPWebSockets} {
			t.Run(fmt.Sprint(status, tr), func(t *testing.T) {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				done := make(chan struct{})
				go func() {
					defer close(done)
					for {
						c, err := ln.Accept()
						if err != nil {
							return
						}
						_ = c.SetDeadline(time.Now().Add(10 * time.Second))
						if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
							fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Length: 0\r\n\r\n", status, http.StatusText(status))
						}
						_ = c.Close()
					}
				}()
				defer func() { _ = ln.Close(); <-done }()
				cfg := config(t, emu, "proxy-refused")
				cfg.Transport = tr
				cfg.Port = wsPort(t, emu)
				// A host name, not loopback: loopback never goes through a proxy.
				cfg.ProvisioningHost = "dps.example.invalid"
				cfg.Proxy = &url.URL{Scheme: "http", Host: ln.Addr().String()}
				c, err := iotc.New(cfg)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close(context.Background())
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				err = c.Connect(ctx, nil)
				if !errors.Is(err, iotc.ErrInvalidConfig) || ctx.Err() != nil {
					t.Fatalf("Connect = %v (ctx %v), want ErrInvalidConfig at once", err, ctx.Err())
				}
			})
		}
	}
}
