package wsdial

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// closedAddr returns a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// plainServer answers every connection with a line of plain HTTP, not TLS.
func plainServer(t *testing.T) string {
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
			_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n"))
			_ = c.Close()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); <-done })
	return ln.Addr().String()
}

// Dial's errors name no network address (they end up in logs and status
// callbacks), whatever failed: the TCP connection, the proxy, TLS.
func TestDialErrorsNameNoAddress(t *testing.T) {
	untrusted := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer untrusted.Close()
	untrustedAddr := strings.TrimPrefix(untrusted.URL, "https://")
	for _, tc := range []struct {
		name, addr string // addr is what the error must not name
		opts       func(addr string) Options
		say        string
	}{
		{"Refused", closedAddr(t), func(a string) Options {
			return Options{URL: "wss://" + a + Path}
		}, "refused"},
		{"ProxyRefused", closedAddr(t), func(a string) Options {
			return Options{URL: "wss://hub.example.net:443" + Path, Proxy: func(*http.Request) (*url.URL, error) {
				return &url.URL{Scheme: "http", Host: a}, nil
			}}
		}, "refused"},
		{"NotTLS", plainServer(t), func(a string) Options {
			return Options{URL: "wss://" + a + Path}
		}, "HTTP response to HTTPS"},
		{"Untrusted", untrustedAddr, func(a string) Options {
			return Options{URL: "wss://" + a + Path}
		}, "not trusted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.opts(tc.addr)
			o.Who, o.Subprotocol = "mqttws", "mqtt"
			o.TLS = &tls.Config{ServerName: "127.0.0.1"}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, err := Dial(ctx, o)
			if err == nil {
				_ = c.Close()
				t.Fatal("Dial succeeded")
			}
			host, port, _ := net.SplitHostPort(tc.addr)
			if text := err.Error(); strings.Contains(text, host) || strings.Contains(text, port) {
				t.Fatalf("error %q names the address %s", text, tc.addr)
			}
			if !strings.Contains(err.Error(), tc.say) {
				t.Fatalf("error %q does not say %q", err, tc.say)
			}
		})
	}
}
