package fileupload

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// connectProxy tunnels every CONNECT to target and records the
// authorities asked for.
func connectProxy(t *testing.T, target string) (*url.URL, func() []string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var asked []string
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil || req.Method != http.MethodConnect {
					return
				}
				mu.Lock()
				asked = append(asked, req.Host)
				mu.Unlock()
				up, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer up.Close()
				_, _ = io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
				go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	return &url.URL{Scheme: "http", Host: ln.Addr().String()}, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), asked...)
	}
}

// TestThroughProxy: the SAS request, the blob upload and the notification
// all go through the configured CONNECT proxy, with the device's SAS in
// the Authorization header; the hub's 403006 comes back as a HubError.
func TestThroughProxy(t *testing.T) {
	var mu sync.Mutex
	var blob []byte
	var notes []map[string]any
	starts := 0
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/devices/d1/files":
			if r.Header.Get("Authorization") != "SharedAccessSignature sr=x" || r.URL.Query().Get("api-version") != APIVersion {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			starts++
			if starts > 1 {
				w.WriteHeader(http.StatusForbidden)
				_, _ = io.WriteString(w, `{"Message":"ErrorCode:DeviceMaximumActiveFileUploadLimitExceeded;too many","ExceptionMessage":"Tracking ID:1 (errorCode 403006)"}`)
				return
			}
			_ = json.NewEncoder(w).Encode(map[string]string{"correlationId": "c1", "hostName": "example.com/acct", "containerName": "up", "blobName": "d1/f.txt", "sasToken": "?sv=2021-12-02&sig=s"})
		case r.Method == http.MethodPut && r.URL.Path == "/acct/up/d1/f.txt":
			blob, _ = io.ReadAll(r.Body)
			w.WriteHeader(http.StatusCreated)
		case r.Method == http.MethodPost && r.URL.Path == "/devices/d1/files/notifications":
			var n map[string]any
			_ = json.NewDecoder(r.Body).Decode(&n)
			notes = append(notes, n)
			w.WriteHeader(http.StatusNoContent)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer srv.Close()
	proxy, asked := connectProxy(t, srv.Listener.Addr().String())
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	u, err := New(Options{RootCAs: pool, Proxy: proxy, Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer u.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn := ports.HubConnection{Host: "example.com", DeviceID: "d1", Auth: ports.Auth{SASToken: "SharedAccessSignature sr=x"}}
	tgt, err := u.StartUpload(ctx, conn, "f.txt")
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Upload(ctx, tgt, ports.BlobUpload{Body: strings.NewReader("hello"), Size: 5}); err != nil {
		t.Fatal(err)
	}
	if err := u.NotifyUpload(ctx, conn, tgt.CorrelationID, ports.FileUploadResult{Success: true, StatusCode: 201}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if string(blob) != "hello" || len(notes) != 1 || notes[0]["correlationId"] != "c1" || notes[0]["isSuccess"] != true {
		t.Errorf("blob %q, notifications %v", blob, notes)
	}
	mu.Unlock()
	for _, a := range asked() {
		if a != "example.com:443" {
			t.Errorf("proxy asked for %q", a)
		}
	}
	if len(asked()) == 0 {
		t.Fatal("nothing went through the proxy")
	}
	_, err = u.StartUpload(ctx, conn, "g.txt")
	var he *domain.HubError
	if !errors.As(err, &he) || he.Status != 403 || he.Code != 403006 {
		t.Fatalf("second start: %v, want HubError 403 403006", err)
	}
	bad := conn
	bad.Auth.SASToken = "wrong"
	if _, err := u.StartUpload(ctx, bad, "h.txt"); !errors.Is(err, domain.ErrUnauthorized) {
		t.Fatalf("wrong token: %v, want ErrUnauthorized", err)
	}
}

// TestOptions: a bad proxy or port is a configuration error.
func TestOptions(t *testing.T) {
	for _, o := range []Options{
		{Proxy: &url.URL{Scheme: "socks5", Host: "p:1"}},
		{Port: 70000},
	} {
		if _, err := New(o); !errors.Is(err, domain.ErrInvalidConfig) {
			t.Errorf("New(%+v): %v, want ErrInvalidConfig", o, err)
		}
	}
}
