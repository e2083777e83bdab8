package mqttws_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotc-go/iotc/adapters/mqttws"
	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/emulator"
	"github.com/iotc-go/iotc/internal/contract"
	"github.com/iotc-go/iotc/ports"
)

// net/http reads the proxy environment once per process, so the
// environment cases run in a child process: this test binary started
// with envChild set runs envProxyChild instead of the tests (see TestMain).
const (
	envChild  = "MQTTWS_TEST_CHILD"
	envPort   = "MQTTWS_TEST_PORT"
	envCA     = "MQTTWS_TEST_CA_FILE"
	envHub    = "MQTTWS_TEST_HUB"
	envDevice = "MQTTWS_TEST_DEVICE"
	envSAS    = "MQTTWS_TEST_SAS"
)

// testHub is a hub host name that is not loopback (net/http never
// proxies localhost); the child maps it to 127.0.0.1 when it dials
// directly, the proxy when it tunnels.
const testHub = "hub.iotc.test"

// envProxyChild connects with the default Options (proxy from the
// environment), sends one message and closes. It returns the exit code.
func envProxyChild() int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	port, err := strconv.Atoi(os.Getenv(envPort))
	if err != nil {
		return fail(err)
	}
	pem, err := os.ReadFile(os.Getenv(envCA))
	if err != nil {
		return fail(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return fail(errors.New("bad CA file"))
	}
	d := &net.Dialer{}
	tr := mqttws.New(&mqttws.Options{
		Port: port, RootCAs: roots,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if host, p, err := net.SplitHostPort(addr); err == nil && host == testHub {
				addr = net.JoinHostPort("127.0.0.1", p)
			}
			return d.DialContext(ctx, network, addr)
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sess, err := tr.Connect(ctx, ports.HubConnection{Host: os.Getenv(envHub), DeviceID: os.Getenv(envDevice), Auth: ports.Auth{SASToken: os.Getenv(envSAS)}}, discard{})
	if err != nil {
		return fail(err)
	}
	defer sess.Close()
	if err := sess.SendTelemetry(ctx, domain.Message{Body: []byte(`{"via":"env"}`)}); err != nil {
		return fail(err)
	}
	return 0
}

type discard struct{}

func (discard) OnDesiredPatch([]byte)                                                  {}
func (discard) OnMethod(ports.MethodRequest, func(context.Context, int, []byte) error) {}
func (discard) OnCloudMessage(_ domain.CloudMessage, settle func(domain.Outcome)) {
	settle(domain.Complete)
}

func TestProxyFromEnvironment(t *testing.T) {
	t.Parallel()
	e, err := emulator.Start(context.Background(), &emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-", HubHost: testHub, CertDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	_, wsPortText, _ := net.SplitHostPort(e.WebSocketAddr())
	route := func(hp string) string {
		if host, p, err := net.SplitHostPort(hp); err == nil && host == testHub {
			return net.JoinHostPort("127.0.0.1", p)
		}
		return hp
	}

	for i, tc := range []struct {
		name      string
		env       func(proxy string) []string
		viaProxy  bool
		wantCalls int
	}{
		{"HTTPS_PROXY", func(p string) []string { return []string{"HTTPS_PROXY=" + p, "NO_PROXY="} }, true, 1},
		{"https_proxy", func(p string) []string { return []string{"https_proxy=" + p, "no_proxy="} }, true, 1},
		{"NO_PROXY names the hub", func(p string) []string { return []string{"HTTPS_PROXY=" + p, "NO_PROXY=.iotc.test"} }, false, 0},
	} {
		id := "env-" + strconv.Itoa(i)
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := contract.StartProxy(t, proxyUser, proxyPass, route)
			key, err := e.CreateDevice(id)
			if err != nil {
				t.Fatal(err)
			}
			sas, err := domain.BuildSAS(key, domain.HubResource(testHub, id), time.Now().Add(time.Hour), "")
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(cleanEnv(),
				envChild+"=1", envPort+"="+wsPortText, envCA+"="+e.CAFile(), envHub+"="+testHub,
				envDevice+"="+id, envSAS+"="+sas)
			cmd.Env = append(cmd.Env, tc.env(p.URL(proxyUser, proxyPass).String())...)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			seen := p.Seen()
			if len(seen) != tc.wantCalls {
				t.Fatalf("proxy saw %d requests (%+v), want %d", len(seen), seen, tc.wantCalls)
			}
			for _, r := range seen {
				if r.Method != http.MethodConnect || !r.AuthOK || r.Target != net.JoinHostPort(testHub, wsPortText) {
					t.Errorf("proxy saw %+v, want an authorized CONNECT to %s:%s", r, testHub, wsPortText)
				}
			}
		})
	}
}

// cleanEnv is the environment without any proxy variable.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "REQUEST_METHOD":
			continue
		}
		out = append(out, kv)
	}
	return out
}
