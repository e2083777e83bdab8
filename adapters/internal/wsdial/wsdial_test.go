package wsdial

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/goleak"

	"github.com/iotc-go/iotc/domain"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSanitize(t *testing.T) {
	addr := &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 5671}
	refused := &net.OpError{Op: "dial", Net: "tcp", Addr: addr, Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}}
	for _, tc := range []struct {
		name string
		in   error
		want string
		is   error
	}{
		{"op error", refused, "connection refused: check the host and port", domain.ErrConnectionRefused},
		{"url error", &url.Error{Op: "Get", URL: "https://10.1.2.3:443/$iothub/websocket", Err: refused}, "connection refused: check the host and port", domain.ErrConnectionRefused},
		{"wrapped", fmt.Errorf("failed to WebSocket dial: %w", &url.Error{Op: "Get", URL: "https://h:1/x", Err: refused}), "connection refused", nil},
		{"dns", &net.DNSError{Err: "no such host", Name: "hub.example.com", IsNotFound: true}, "host name not found", domain.ErrHostNotFound},
		{"deadline", fmt.Errorf("dial 10.1.2.3:443: %w", context.DeadlineExceeded), "", context.DeadlineExceeded},
		{"proxy", fmt.Errorf("x: %w", &proxyError{fmt.Errorf("%w: the proxy requires authentication (407)", domain.ErrInvalidConfig)}), "407", domain.ErrInvalidConfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Sanitize(tc.in)
			if strings.Contains(got.Error(), "10.1.2.3") || strings.Contains(got.Error(), "5671") || strings.Contains(got.Error(), "hub.example.com") {
				t.Fatalf("Sanitize(%v) = %q: names the address", tc.in, got)
			}
			if !strings.Contains(got.Error(), tc.want) {
				t.Errorf("Sanitize(%v) = %q, want it to say %q", tc.in, got, tc.want)
			}
			if tc.is != nil && !errors.Is(got, tc.is) {
				t.Errorf("Sanitize(%v) = %v, want it to wrap %v", tc.in, got, tc.is)
			}
		})
	}
	if Sanitize(nil) != nil {
		t.Error("Sanitize(nil) != nil")
	}
}

func TestProxyOptions(t *testing.T) {
	if _, _, err := Proxy("x", &url.URL{Scheme: "http", Host: "p:1"}, true); !errors.Is(err, domain.ErrInvalidConfig) {
		t.Errorf("Proxy and NoProxy: %v", err)
	}
	if _, _, err := Proxy("x", &url.URL{Scheme: "https", Host: "p:1"}, false); !errors.Is(err, domain.ErrInvalidConfig) {
		t.Errorf("https proxy: %v", err)
	}
	f, desc, err := Proxy("x", &url.URL{Scheme: "http", Host: "p:1", User: url.UserPassword("u", "hidden-pw")}, false)
	if err != nil || strings.Contains(desc, "hidden-pw") {
		t.Fatalf("Proxy = %q, %v: want no error and a redacted description", desc, err)
	}
	if u, err := f(nil); err != nil || u.Host != "p:1" {
		t.Errorf("proxy func = %v, %v", u, err)
	}
	if f, desc, err := Proxy("x", nil, true); err != nil || f != nil || desc != "none" {
		t.Errorf("NoProxy = %v %q %v", f != nil, desc, err)
	}
}

func TestScrub(t *testing.T) {
	for in, want := range map[string]string{
		"read tcp 127.0.0.1:5555->127.0.0.1:4444: read: connection reset by peer": "read tcp <address>-><address>: read: connection reset by peer",
		`Get "https://hub.example.com:443/$iothub/websocket": EOF`:                `Get "<address>": EOF`,
		"dial tcp [::1]:5671: connect: connection refused":                        "dial tcp <address>: connect: connection refused",
		"dial tcp localhost:5671: i/o timeout":                                    "dial tcp <address>: i/o timeout",
		"amqp:connection:forced: the device connected again":                      "amqp:connection:forced: the device connected again",
	} {
		if got := Scrub(in); got != want {
			t.Errorf("Scrub(%q) = %q, want %q", in, got, want)
		}
	}
}
