package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iotc-go/iotc/emulator"
)

// ephemeral are flags that keep a test off the standard ports.
func ephemeral(dir string) []string {
	return []string{
		"-mqtt-addr", "127.0.0.1:0", "-ws-addr", "127.0.0.1:0", "-amqp-addr", "127.0.0.1:0",
		"-rest-addr", "127.0.0.1:0", "-cert-dir", filepath.Join(dir, "certs"),
		"-info-file", filepath.Join(dir, "info.json"),
	}
}

// startCLI starts the emulator as the command does and returns it with the
// info file it wrote; it is closed at the end of the test.
func startCLI(t *testing.T, dir string, args ...string) (*emulator.Emulator, info, string) {
	t.Helper()
	t.Setenv("IOTC_EMULATOR_API_TOKEN", "")
	t.Setenv("IOTC_EMULATOR_GROUP_KEY", "")
	var out, errOut bytes.Buffer
	e, err := start(t.Context(), append(ephemeral(dir), args...), &out, &errOut)
	if err != nil {
		t.Fatalf("start %v: %v\n%s", args, err, errOut.String())
	}
	t.Cleanup(func() { _ = e.Close() })
	b, err := os.ReadFile(filepath.Join(dir, "info.json"))
	if err != nil {
		t.Fatal(err)
	}
	var in info
	if err := json.Unmarshal(b, &in); err != nil {
		t.Fatalf("info file %s: %v", b, err)
	}
	return e, in, out.String()
}

func TestInfoFile(t *testing.T) {
	e, in, out := startCLI(t, t.TempDir())
	if in.IDScope != e.IDScope() || in.MQTTAddr != e.MQTTAddr() || in.APIToken != e.APIToken() || in.CAFile != e.CAFile() {
		t.Fatalf("info %+v does not describe the emulator", in)
	}
	if in.PID != os.Getpid() {
		t.Fatalf("info pid %d, want %d", in.PID, os.Getpid())
	}
	if in.DashboardURL != e.DashboardURL() || !strings.HasPrefix(in.DashboardURL, e.RESTURL()+"/#token=") || !strings.Contains(out, "dashboard         "+e.DashboardURL()) {
		t.Errorf("dashboard address %q not printed (info has %q):\n%s", e.DashboardURL(), in.DashboardURL, out)
	}
	if !strings.Contains(out, "pid ") || !strings.Contains(out, e.IDScope()) {
		t.Fatalf("start-up text lacks the pid or the scope:\n%s", out)
	}
	if in.DPSConnectionString != e.DPSConnectionString() || !strings.Contains(out, "provisioningserviceowner "+e.DPSConnectionString()) {
		t.Errorf("DPS connection string not in the info file or not printed")
	}
}

func TestMQTTAddrDash(t *testing.T) {
	e, in, out := startCLI(t, t.TempDir(), "-mqtt-addr", "-")
	if e.MQTTAddr() != "" || in.MQTTAddr != "" {
		t.Fatalf("MQTT listener %q / %q, want none", e.MQTTAddr(), in.MQTTAddr)
	}
	if in.WebSocketAddr == "" || in.AMQPAddr == "" {
		t.Fatalf("WebSocket %q AMQP %q", in.WebSocketAddr, in.AMQPAddr)
	}
	if !strings.Contains(out, "MQTT (DPS + hub)  (disabled)") {
		t.Fatalf("start-up text does not say MQTT is disabled:\n%s", out)
	}
}

func TestAPITokenSurvivesRestartWithDataDir(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	e1, in1, _ := startCLI(t, dir, "-data-dir", data)
	if err := e1.Close(); err != nil {
		t.Fatal(err)
	}
	e2, in2, _ := startCLI(t, dir, "-data-dir", data)
	if in1.APIToken == "" || in2.APIToken != in1.APIToken || e2.APIToken() != in1.APIToken {
		t.Fatalf("API token %q then %q", in1.APIToken, in2.APIToken)
	}
	if in2.IDScope != in1.IDScope {
		t.Fatalf("ID scope %q then %q", in1.IDScope, in2.IDScope)
	}
	st, err := os.Stat(filepath.Join(data, emulator.DataDirTokenFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v", err)
	}
	if err := e2.Close(); err != nil {
		t.Fatal(err)
	}
	_, in3, _ := startCLI(t, dir, "-data-dir", data, "-api-token", "from-flag")
	if in3.APIToken != "from-flag" {
		t.Fatalf("-api-token ignored: %q", in3.APIToken)
	}
}

func TestHubHostReissuesCertificate(t *testing.T) {
	dir := t.TempDir()
	e1, in1, _ := startCLI(t, dir)
	ca, err := os.ReadFile(in1.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := e1.Close(); err != nil {
		t.Fatal(err)
	}
	_, in2, _ := startCLI(t, dir, "-hub-host", "vm")
	if in2.HubHost != "vm" {
		t.Fatalf("hub host %q", in2.HubHost)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	for _, addr := range []string{in2.MQTTAddr, in2.WebSocketAddr, in2.AMQPAddr} {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "vm", MinVersion: tls.VersionTLS12})
		if err != nil {
			t.Fatalf("TLS to %s as vm with the old CA: %v", addr, err)
		}
		_ = c.Close()
	}
}

func TestBadFlags(t *testing.T) {
	t.Setenv("IOTC_EMULATOR_API_TOKEN", "")
	dir := t.TempDir()
	for _, args := range [][]string{
		{"-no-such-flag"},
		{"extra-argument"},
		{"-mqtt-addr", "no-port"},
		{"-hub-host", "bad host"},
		{"-c2d-lock-timeout", "0s"},
		{"-c2d-max-delivery-count", "-1"},
	} {
		var out, errOut bytes.Buffer
		e, err := start(t.Context(), append(ephemeral(dir), args...), &out, &errOut)
		if err == nil {
			_ = e.Close()
			t.Errorf("start %v succeeded", args)
		}
	}
}

// TestHelpIsHonest: -h exits cleanly with a text that names every
// listener, the dashboard and the non-root fallback, and promises nothing
// "below".
func TestHelpIsHonest(t *testing.T) {
	var out, errOut bytes.Buffer
	_, err := start(t.Context(), []string{"-h"}, &out, &errOut)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	help := errOut.String()
	for _, want := range []string{"AMQP", "WebSockets", "dashboard", "--info-file", "9443", "root"} {
		if !strings.Contains(help, want) {
			t.Errorf("--help does not mention %s:\n%s", want, help)
		}
	}
	if strings.Contains(help, "printed below") {
		t.Errorf("--help promises what it does not print:\n%s", help)
	}
}

// TestInfoFileDirectoryCreated: --info-file in a directory that does not
// exist yet works.
func TestInfoFileDirectoryCreated(t *testing.T) {
	dir := t.TempDir()
	nested := filepath.Join(dir, "a", "b", "info.json")
	var out, errOut bytes.Buffer
	e, err := start(t.Context(), append(ephemeral(dir), "-info-file", nested), &out, &errOut)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer e.Close()
	if _, err := os.Stat(nested); err != nil {
		t.Fatalf("info file: %v", err)
	}
	// A directory that cannot be made is an error before "is running".
	blocker := filepath.Join(dir, "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	e2, err := start(t.Context(), append(ephemeral(dir), "-info-file", filepath.Join(blocker, "info.json")), &out, &errOut)
	if err == nil {
		_ = e2.Close()
		t.Fatal("an info file under a regular file was accepted")
	}
	if !strings.Contains(err.Error(), "--info-file") || strings.Contains(out.String(), "is running") {
		t.Errorf("error %v; output:\n%s", err, out.String())
	}
}

// TestUnprivilegedPorts acts as a user who may not bind ports below 1024:
// the default WebSocket port falls back to 9443 and says so; a port set by
// its flag is an error naming the flag.
func TestUnprivilegedPorts(t *testing.T) {
	real := listen
	t.Cleanup(func() { listen = real })
	listen = func(network, addr string) (net.Listener, error) {
		if _, port, _ := net.SplitHostPort(addr); port == "443" || port == "80" {
			return nil, &net.OpError{Op: "listen", Net: network, Err: os.NewSyscallError("bind", syscall.EACCES)}
		}
		return real(network, addr)
	}
	ws := "127.0.0.1:443"
	note, err := checkPrivileged("ws-addr", &ws, false)
	if err != nil || ws != "127.0.0.1:9443" || !strings.Contains(note, "9443") || !strings.Contains(note, "--ws-addr") {
		t.Errorf("default ws-addr: %q, %q, %v", ws, note, err)
	}
	ws = "127.0.0.1:443"
	if _, err := checkPrivileged("ws-addr", &ws, true); err == nil || !strings.Contains(err.Error(), "--ws-addr") {
		t.Errorf("explicit ws-addr: %v", err)
	}
	rest := "127.0.0.1:80"
	if _, err := checkPrivileged("rest-addr", &rest, false); err == nil || !strings.Contains(err.Error(), "--rest-addr") {
		t.Errorf("rest-addr: %v", err)
	}
	free := "127.0.0.1:0"
	if note, err := checkPrivileged("mqtt-addr", &free, true); err != nil || note != "" || free != "127.0.0.1:0" {
		t.Errorf("a bindable port: %q, %v", note, err)
	}
}

// TestC2DLockTimeoutFlag: -c2d-lock-timeout sets how long a message
// received over the device HTTPS API stays locked: it comes again, its
// delivery count up, once the lock expired.
func TestC2DLockTimeoutFlag(t *testing.T) {
	dir := t.TempDir()
	e, _, _ := startCLI(t, dir, "-c2d-lock-timeout", "20ms")
	key, err := e.CreateDevice("lock1")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.SendCloudToDevice(t.Context(), "lock1", []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	// A device SAS token, built as the SDKs build it.
	res := url.QueryEscape(e.HubHost() + "/devices/lock1")
	se := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
	k, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		t.Fatal(err)
	}
	mac := hmac.New(sha256.New, k)
	mac.Write([]byte(res + "\n" + se))
	tok := "SharedAccessSignature sr=" + res + "&sig=" + url.QueryEscape(base64.StdEncoding.EncodeToString(mac.Sum(nil))) + "&se=" + se
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.CAPool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}}}
	defer client.CloseIdleConnections()
	get := func() (int, string) {
		req, err := http.NewRequestWithContext(t.Context(), "GET", "https://"+e.WebSocketAddr()+"/devices/lock1/messages/devicebound?api-version=2021-04-12", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", tok)
		r, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		return r.StatusCode, r.Header.Get("iothub-deliverycount")
	}
	if st, n := get(); st != http.StatusOK || n != "1" {
		t.Fatalf("first receive: %d count %q", st, n)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, n := get()
		if st == http.StatusOK {
			if n != "2" {
				t.Fatalf("after the lock expired: count %q", n)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the message never became visible again")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
