package emulator

import (
	"bytes"
	"crypto/sha1"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/iotc-go/iotc/emulator/internal/pki"
)

func restClient(e *Emulator) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.CAPool(), MinVersion: tls.VersionTLS12}}, Timeout: wait}
}

func restDo(t *testing.T, e *Emulator, method, path, token string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	if !strings.Contains(path, "api-version=") {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		path += sep + "api-version=2022-07-31"
	}
	req, err := http.NewRequestWithContext(ctxT(t), method, e.RESTURL()+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", token)
	}
	req.Header.Set("Content-Type", "application/json")
	c := restClient(e)
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestRESTOverHTTPS(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{RESTAddr: "127.0.0.1:0", APIToken: "secret-token"})
	if e.RESTURL() == "" || e.APIToken() != "secret-token" {
		t.Fatalf("RESTURL %q token %q", e.RESTURL(), e.APIToken())
	}
	if status, _ := restDo(t, e, "GET", "/api/devices", "", nil); status != http.StatusUnauthorized {
		t.Fatalf("no token: %d, want 401", status)
	}
	d, key := newHubDevice(t, e, "rest-dev")
	status, body := restDo(t, e, "GET", "/api/devices/rest-dev", e.APIToken(), nil)
	var dev map[string]any
	if err := json.Unmarshal(body, &dev); err != nil || status != 200 || dev["id"] != "rest-dev" || dev["connected"] != nil {
		t.Fatalf("GET device: %d %s", status, body)
	}
	status, body = restDo(t, e, "GET", "/api/emulator/devices/rest-dev/connection", e.APIToken(), nil)
	if err := json.Unmarshal(body, &dev); err != nil || status != 200 || dev["connected"] != true {
		t.Fatalf("GET connection: %d %s", status, body)
	}
	status, body = restDo(t, e, "GET", "/api/devices/rest-dev/credentials", e.APIToken(), nil)
	var cred struct {
		IDScope      string `json:"idScope"`
		SymmetricKey struct {
			PrimaryKey string `json:"primaryKey"`
		} `json:"symmetricKey"`
	}
	if err := json.Unmarshal(body, &cred); err != nil || status != 200 || cred.IDScope != e.IDScope() || cred.SymmetricKey.PrimaryKey != key {
		t.Fatalf("credentials: %d %s", status, body)
	}

	// A command through REST: the caller sees the device's status and payload.
	go func() {
		m := recv(t, d.methods)
		d.publish("$iothub/methods/res/200/?$rid="+ridOf(t, m.Topic()), 0, []byte(`{"echo":`+string(m.Payload())+`}`))
	}()
	status, body = restDo(t, e, "POST", "/api/devices/rest-dev/components/thermostat1/commands/getMaxMinReport", e.APIToken(),
		map[string]any{"request": "since", "responseTimeout": 30})
	var inv struct {
		Response     map[string]any `json:"response"`
		ResponseCode int            `json:"responseCode"`
	}
	if err := json.Unmarshal(body, &inv); err != nil || status != 201 || inv.ResponseCode != 200 || inv.Response["echo"] != "since" {
		t.Fatalf("command: %d %s", status, body)
	}

	// A desired patch through REST reaches the device.
	status, body = restDo(t, e, "PATCH", "/api/devices/rest-dev/properties", e.APIToken(), map[string]any{"fanSpeed": 3})
	if status/100 != 2 {
		t.Fatalf("PATCH properties: %d %s", status, body)
	}
	if p := decodeJSON(t, recv(t, d.desired).Payload()); p["fanSpeed"] != 3.0 || p["$version"] != 2.0 {
		t.Fatalf("desired push %v", p)
	}

	// Unknown device: 404.
	if status, _ := restDo(t, e, "GET", "/api/devices/ghost", e.APIToken(), nil); status != 404 {
		t.Fatalf("unknown device: %d", status)
	}
	// Enrollment groups list the default group.
	status, body = restDo(t, e, "GET", "/api/enrollmentGroups", e.APIToken(), nil)
	var groups struct {
		Value []struct {
			ID          string `json:"id"`
			Attestation struct {
				Type         string `json:"type"`
				SymmetricKey struct {
					PrimaryKey string `json:"primaryKey"`
				} `json:"symmetricKey"`
			} `json:"attestation"`
		} `json:"value"`
	}
	if err := json.Unmarshal(body, &groups); err != nil || status != 200 || len(groups.Value) != 1 ||
		groups.Value[0].ID != "default" || groups.Value[0].Attestation.SymmetricKey.PrimaryKey != e.GroupKey() {
		t.Fatalf("groups: %d %s", status, body)
	}
}

// TestRESTGroupThumbprint: GET of an X.509 enrollment group shows the
// SHA-1 thumbprint of its CA, as its type says.
func TestRESTGroupThumbprint(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{RESTAddr: "127.0.0.1:0"})
	ca, err := pki.NewCA("thumb CA")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.PutEnrollmentGroup(EnrollmentGroup{ID: "x509-thumb", Enabled: true, CACertPEM: ca.CertPEM}); err != nil {
		t.Fatal(err)
	}
	sum := sha1.Sum(ca.Cert.Raw)
	want := strings.ToUpper(hex.EncodeToString(sum[:]))
	for _, path := range []string{"/api/enrollmentGroups/x509-thumb", "/api/enrollmentGroups"} {
		status, body := restDo(t, e, "GET", path, e.APIToken(), nil)
		if status != 200 || !strings.Contains(string(body), `"sha1Thumbprint":"`+want+`"`) {
			t.Errorf("GET %s = %d %s, want thumbprint %s", path, status, body, want)
		}
	}
}
