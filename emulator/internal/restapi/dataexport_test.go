package restapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
	"github.com/iotc-go/iotc/emulator/internal/export"
)

const dx = "?api-version=" + export.APIVersion

// newExportEnv serves the REST API over a core with a data export.
func newExportEnv(t *testing.T) (*env, *core.Core) {
	t.Helper()
	c := core.New(core.Config{IDScope: "0ne1", HubHost: "h"})
	t.Cleanup(c.Close)
	m, err := export.New(c, export.Options{RetryInitial: time.Millisecond, RetryMax: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	srv := httptest.NewServer(NewCore(c, Options{Token: testToken, DataExport: m}))
	t.Cleanup(srv.Close)
	return &env{t: t, srv: srv}, c
}

func TestDataExportDestinationRoutes(t *testing.T) {
	e, _ := newExportEnv(t)
	const path = "/api/dataExport/destinations/dest1" + dx
	body := `{"displayName":"Webhook No Auth","type":"webhook@v1","url":"https://webhook.site/9bda8769",
		"headerCustomizations":{"x-custom-region":{"value":"westcentralus","secret":false},"x-key":{"value":"k3y","secret":true}}}`
	r := e.call("PUT", path, body)
	if r.status != 200 || r.body["id"] != "dest1" || r.body["status"] != "waiting" || r.body["type"] != "webhook@v1" {
		t.Fatalf("PUT: %d %s", r.status, r.raw)
	}
	hc := r.body["headerCustomizations"].(map[string]any)
	if hc["x-key"].(map[string]any)["value"] != export.Mask || hc["x-custom-region"].(map[string]any)["value"] != "westcentralus" {
		t.Errorf("header customizations %v", hc)
	}
	etag := r.header.Get("ETag")
	if etag == "" {
		t.Error("no ETag")
	}
	if g := e.call("GET", path, ""); g.status != 200 || g.body["url"] != "https://webhook.site/9bda8769" || g.header.Get("ETag") != etag {
		t.Errorf("GET: %d %s", g.status, g.raw)
	}
	// The spec's Event Hubs example, key masked on reads.
	eh := `{"displayName":"Event Hub","type":"eventhubs@v1","authorization":{"type":"connectionString",
		"connectionString":"Endpoint=sb://hubName.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=S3cr3t;EntityPath=entityPath1"}}`
	r = e.call("PUT", "/api/dataExport/destinations/eh"+dx, eh)
	if r.status != 200 || strings.Contains(string(r.raw), "S3cr3t") || !strings.Contains(string(r.raw), "SharedAccessKey=*****") {
		t.Fatalf("PUT eventhubs: %d %s", r.status, r.raw)
	}
	l := e.call("GET", "/api/dataExport/destinations"+dx, "")
	if v, _ := l.body["value"].([]any); l.status != 200 || len(v) != 2 || strings.Contains(string(l.raw), "S3cr3t") || strings.Contains(string(l.raw), "k3y") {
		t.Errorf("list: %d %s", l.status, l.raw)
	}
	// PATCH (merge) keeps the secrets not named.
	p := e.call("PATCH", path, `{"displayName":"Renamed","url":"https://example.com/in"}`)
	if p.status != 200 || p.body["displayName"] != "Renamed" || p.body["url"] != "https://example.com/in" ||
		p.body["headerCustomizations"].(map[string]any)["x-key"] == nil || p.header.Get("ETag") == etag {
		t.Errorf("PATCH: %d %s", p.status, p.raw)
	}
	// If-Match with the old etag fails.
	req := func(method, path, body, ifMatch string) int {
		rq, _ := http.NewRequestWithContext(t.Context(), method, e.srv.URL+path, strings.NewReader(body))
		rq.Header.Set("Authorization", testToken)
		rq.Header.Set("If-Match", ifMatch)
		res, err := e.srv.Client().Do(rq)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if st := req("PATCH", path, `{"displayName":"x"}`, etag); st != http.StatusPreconditionFailed {
		t.Errorf("stale If-Match: %d", st)
	}
	// Validation.
	for _, bad := range []string{
		`{"type":"webhook@v1","url":"https://x"}`,              // no displayName
		`{"displayName":"D","type":"blobstorage@v1"}`,          // not served
		`{"displayName":"D","type":"webhook@v1","url":"nope"}`, // bad url
		`{"displayName":"D","type":"eventhubs@v1"}`,            // no authorization
		`{"displayName":"D","type":"webhook@v1","url":"https://x","authorization":{"type":"oauth","tokenUrl":"https://t","clientId":"c","clientSecret":"s"}}`,
		`{"displayName":"D","type":"eventhubs@v1","authorization":{"type":"connectionString","connectionString":"Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=s"}}`,
		`{"id":"other","displayName":"D","type":"webhook@v1","url":"https://x"}`, // id differs from the path
		`{"displayName":5,"type":"webhook@v1","url":"https://x"}`,
	} {
		r := e.call("PUT", "/api/dataExport/destinations/bad"+dx, bad)
		r.wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	}
	e.call("PUT", "/api/dataExport/destinations/bad"+dx, `{"displayName":`).wantError(t, http.StatusBadRequest, "BadRequest")
	e.call("PUT", "/api/dataExport/destinations/a%20b"+dx, `{"displayName":"D","type":"webhook@v1","url":"https://x"}`).
		wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	e.call("GET", "/api/dataExport/destinations/bad"+dx, "").wantError(t, http.StatusNotFound, "NotFound")
	// Delete.
	if d := e.call("DELETE", path, ""); d.status != http.StatusNoContent {
		t.Errorf("DELETE: %d %s", d.status, d.raw)
	}
	e.call("DELETE", path, "").wantError(t, http.StatusNotFound, "NotFound")
}

func TestDataExportExportRoutes(t *testing.T) {
	e, c := newExportEnv(t)
	var mu sync.Mutex
	var got []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, r.ContentLength)
		_, _ = r.Body.Read(b)
		mu.Lock()
		got = append(got, string(b))
		mu.Unlock()
	}))
	t.Cleanup(hook.Close)
	if r := e.call("PUT", "/api/dataExport/destinations/hook"+dx, `{"displayName":"Hook","type":"webhook@v1","url":"`+hook.URL+`"}`); r.status != 200 {
		t.Fatalf("destination: %d %s", r.status, r.raw)
	}
	const path = "/api/dataExport/exports/export1" + dx
	body := `{"displayName":"Enriched Export","enabled":true,"source":"telemetry",
		"filter":"SELECT * FROM devices WHERE $displayName != \"abc\" AND t > 1",
		"enrichments":{"Custom data":{"value":"My value"},"abc":{"path":"$displayName"}},
		"destinations":[{"id":"hook"}]}`
	r := e.call("PUT", path, body)
	if r.status != 200 || r.body["id"] != "export1" || r.body["status"] != "starting" || r.body["source"] != "telemetry" {
		t.Fatalf("PUT: %d %s", r.status, r.raw)
	}
	if g := e.call("GET", path, ""); g.status != 200 || g.body["filter"] == nil || g.header.Get("ETag") == "" {
		t.Errorf("GET: %d %s", g.status, g.raw)
	}
	if l := e.call("GET", "/api/dataExport/exports"+dx, ""); len(l.body["value"].([]any)) != 1 {
		t.Errorf("list: %s", l.raw)
	}
	if l := e.call("GET", "/api/dataExport/destinations/hook/exports"+dx, ""); len(l.body["value"].([]any)) != 1 {
		t.Errorf("exports of the destination: %s", l.raw)
	}
	if l := e.call("GET", "/api/dataExport/exports/export1/destinations"+dx, ""); len(l.body["value"].([]any)) != 1 ||
		l.body["value"].([]any)[0].(map[string]any)["id"] != "hook" {
		t.Errorf("destinations of the export: %s", l.raw)
	}
	// The export runs: a device's message arrives at the webhook.
	if _, err := c.CreateDevice("dev"); err != nil {
		t.Fatal(err)
	}
	if err := c.StoreTelemetry(core.Telemetry{DeviceID: "dev", Body: []byte(`{"t":5}`), Received: time.Now()}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the webhook got nothing")
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	if !strings.Contains(got[0], `"Custom data":"My value"`) || !strings.Contains(got[0], `"abc":"dev"`) {
		t.Errorf("exported %s", got[0])
	}
	mu.Unlock()
	// PATCH: disable it.
	if p := e.call("PATCH", path, `{"enabled":false,"enrichments":{"Custom data":{"value":"My value 2"}}}`); p.status != 200 ||
		p.body["enabled"] != false || p.body["status"] != "notStarted" ||
		p.body["enrichments"].(map[string]any)["Custom data"].(map[string]any)["value"] != "My value 2" {
		t.Errorf("PATCH: %d %s", p.status, p.raw)
	}
	// Validation, the unknown destination first.
	for _, bad := range []string{
		`{"displayName":"E","enabled":true,"source":"telemetry","destinations":[{"id":"nope"}]}`,
		`{"displayName":"E","source":"telemetry","destinations":[{"id":"hook"}]}`, // no enabled
		`{"displayName":"E","enabled":true,"source":"audit","destinations":[{"id":"hook"}]}`,
		`{"displayName":"E","enabled":true,"source":"telemetry","destinations":[]}`,
		`{"displayName":"E","enabled":true,"source":"telemetry","destinations":[{"id":"hook","transform":"{ a: .b }"}]}`,
		`{"displayName":"E","enabled":true,"source":"telemetry","filter":"SELECT name FROM devices","destinations":[{"id":"hook"}]}`,
		`{"displayName":"E","enabled":"yes","source":"telemetry","destinations":[{"id":"hook"}]}`,
	} {
		e.call("PUT", "/api/dataExport/exports/bad"+dx, bad).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	}
	if r := e.call("PUT", "/api/dataExport/exports/bad"+dx, `{"displayName":"E","enabled":true,"source":"telemetry","destinations":[{"id":"nope"}]}`); !strings.Contains(r.body["error"].(map[string]any)["message"].(string), `destination "nope" does not exist`) {
		t.Errorf("unknown destination message: %s", r.raw)
	}
	// A destination in use cannot be deleted.
	e.call("DELETE", "/api/dataExport/destinations/hook"+dx, "").wantError(t, http.StatusConflict, "Conflict")
	if d := e.call("DELETE", path, ""); d.status != http.StatusNoContent {
		t.Errorf("DELETE: %d", d.status)
	}
	e.call("GET", path, "").wantError(t, http.StatusNotFound, "NotFound")
	e.call("GET", "/api/dataExport/exports/export1/destinations"+dx, "").wantError(t, http.StatusNotFound, "NotFound")
	if d := e.call("DELETE", "/api/dataExport/destinations/hook"+dx, ""); d.status != http.StatusNoContent {
		t.Errorf("DELETE destination: %d %s", d.status, d.raw)
	}
}

func TestDataExportVersionsAndRoles(t *testing.T) {
	e, _ := newExportEnv(t)
	// The data export routes take the preview api-versions, not 2022-07-31.
	e.call("GET", "/api/dataExport/exports?api-version="+APIVersion, "").wantError(t, http.StatusBadRequest, "InvalidApiVersionParameter")
	if r := e.call("GET", "/api/dataExport/exports?api-version=2022-06-30-preview", ""); r.status != 200 {
		t.Errorf("2022-06-30-preview: %d", r.status)
	}
	e.call("GET", "/api/devices?api-version="+export.APIVersion, "").wantError(t, http.StatusBadRequest, "InvalidApiVersionParameter")
	// An operator reads but does not change exports; a builder does.
	tokens := map[string]string{}
	for _, role := range []string{RoleOperator, RoleBuilder} {
		r := e.call("PUT", "/api/apiTokens/"+role[:8], `{"roles":[{"role":"`+role+`"}]}`)
		if r.status != 200 {
			t.Fatalf("token: %d %s", r.status, r.raw)
		}
		tokens[role] = r.body["token"].(string)
	}
	dest := `{"displayName":"D","type":"webhook@v1","url":"https://example.com"}`
	e.callAuth("PUT", "/api/dataExport/destinations/d"+dx, dest, tokens[RoleOperator]).wantError(t, http.StatusForbidden, "Forbidden")
	if r := e.callAuth("GET", "/api/dataExport/destinations"+dx, "", tokens[RoleOperator]); r.status != 200 {
		t.Errorf("operator read: %d", r.status)
	}
	if r := e.callAuth("PUT", "/api/dataExport/destinations/d"+dx, dest, tokens[RoleBuilder]); r.status != 200 {
		t.Errorf("builder write: %d %s", r.status, r.raw)
	}
	e.callAuth("DELETE", "/api/dataExport/destinations/d"+dx, "", tokens[RoleOperator]).wantError(t, http.StatusForbidden, "Forbidden")
}

func TestDataExportNotConfigured(t *testing.T) {
	e := newEnv(t)
	e.call("GET", "/api/dataExport/exports"+dx, "").wantError(t, http.StatusNotImplemented, "NotImplemented")
}
