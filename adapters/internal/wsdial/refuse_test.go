package wsdial

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/iotc-go/iotc/domain"
)

// refusingProxy answers every CONNECT with status and closes.
func refusingProxy(t *testing.T, status int) *url.URL {
	t.Helper()
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
				fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", status, http.StatusText(status))
			}
			_ = c.Close()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); <-done })
	return &url.URL{Scheme: "http", Host: ln.Addr().String()}
}

// TestProxyRefusalNotRetryable: a proxy answering 401, 403 or 407 to
// CONNECT is a configuration error no retry can mend; 502 stays transient.
func TestProxyRefusalNotRetryable(t *testing.T) {
	for _, tc := range []struct {
		status    int
		retryable bool
		say       string
	}{
		{http.StatusUnauthorized, false, "401"},
		{http.StatusForbidden, false, "403"},
		{http.StatusProxyAuthRequired, false, "407"},
		{http.StatusBadGateway, true, "502"},
	} {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			p := refusingProxy(t, tc.status)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err := Dial(ctx, Options{
				URL: "wss://hub.example.net:443/$iothub/websocket", Subprotocol: "mqtt", Who: "mqttws",
				TLS:   &tls.Config{ServerName: "hub.example.net"},
				Proxy: func(*http.Request) (*url.URL, error) { return p, nil },
			})
			if err == nil {
				t.Fatal("Dial succeeded through a refusing proxy")
			}
			if got := domain.IsRetryable(err); got != tc.retryable {
				t.Errorf("IsRetryable(%v) = %v, want %v", err, got, tc.retryable)
			}
			if !tc.retryable && !errors.Is(err, domain.ErrInvalidConfig) {
				t.Errorf("err = %v, want ErrInvalidConfig", err)
			}
			if !strings.Contains(err.Error(), tc.say) || strings.Contains(err.Error(), p.Host) {
				t.Errorf("err = %q: want it to say %s and not name the proxy address", err, tc.say)
			}
		})
	}
}

// TestUpgradeRefusedUnauthorized: a server refusing the WebSocket upgrade
// with 401 gives ErrUnauthorized (not retried).
func TestUpgradeRefusedUnauthorized(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer srv.Close()
	tlsCfg := srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := Dial(ctx, Options{URL: "wss" + strings.TrimPrefix(srv.URL, "https") + "/$iothub/websocket", Subprotocol: "mqtt", Who: "mqttws", TLS: tlsCfg})
	if !errors.Is(err, domain.ErrUnauthorized) || domain.IsRetryable(err) {
		t.Fatalf("err = %v, want a non-retryable ErrUnauthorized", err)
	}
}
