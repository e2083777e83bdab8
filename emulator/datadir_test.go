package emulator

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

func startData(t *testing.T, opts Options) (*Emulator, error) {
	t.Helper()
	opts.MQTTAddr = "127.0.0.1:0"
	if opts.RESTAddr == "" {
		opts.RESTAddr = "-"
	}
	return Start(t.Context(), &opts)
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDataDirSurvivesRestart(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "data")
	e1, err := startData(t, Options{DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = e1.Close()
		}
	})
	if want := filepath.Join(dataDir, "certs"); filepath.Dir(e1.CAFile()) != want {
		t.Fatalf("CA file %s, want it in %s", e1.CAFile(), want)
	}
	scope, groupKey := e1.IDScope(), e1.GroupKey()

	// Provision over DPS with the group key, then use the hub.
	const reg = "keeper"
	const model = "dtmi:com:example:Keeper;1"
	key := derived(t, groupKey, reg)
	s, err := dialDPS(t, e1, reg, dpsSAS(t, e1, reg, key, time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	if ans := s.register(1, `{"registrationId":"keeper","payload":{"modelId":"`+model+`"}}`); ans["status"] != "assigned" {
		t.Fatalf("registration %v", ans)
	}
	s.close()
	h := connectHub(t, e1, reg, key, false)
	if status, _, _ := h.twinRequest("$iothub/twin/PATCH/properties/reported/", []byte(`{"temp":21.5,"unit":{"name":"C"}}`)); status != "204" {
		t.Fatalf("reported patch status %s", status)
	}
	h.close()
	waitOffline(t, e1, reg)
	ctx := ctxT(t)
	if err := e1.UpdateProperties(ctx, reg, "", map[string]any{"target": 30}); err != nil {
		t.Fatal(err)
	}
	if err := e1.SendCloudToDevice(ctx, reg, []byte("kept"), map[string]string{"color": "blue"}); err != nil {
		t.Fatal(err)
	}
	before, err := e1.Device(reg)
	if err != nil {
		t.Fatal(err)
	}
	desired1, reported1, err := e1.Twin(reg)
	if err != nil {
		t.Fatal(err)
	}
	if reported1["$version"] != int64(2) || desired1["$version"] != int64(2) {
		t.Fatalf("versions before restart: desired %v reported %v", desired1["$version"], reported1["$version"])
	}
	closed = true
	if err := e1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	for _, f := range []string{DataDirDatabase, DataDirDatabase + "-wal"} {
		st, err := os.Stat(filepath.Join(dataDir, f))
		if errors.Is(err, os.ErrNotExist) && f != DataDirDatabase {
			continue // the WAL is folded in at close
		}
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, st.Mode().Perm())
		}
	}
	for _, dir := range []string{dataDir, filepath.Join(dataDir, "certs")} {
		if dst, err := os.Stat(dir); err != nil {
			t.Error(err)
		} else if dst.Mode().Perm() != 0o700 {
			t.Errorf("%s has mode %v, want 0700", dir, dst.Mode().Perm())
		}
	}
	if left, _ := filepath.Glob(filepath.Join(dataDir, ".*tmp*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}

	e2, err := startData(t, Options{DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e2.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if e2.IDScope() != scope || e2.GroupKey() != groupKey {
		t.Fatalf("after restart scope %q key match %v, want scope %q", e2.IDScope(), e2.GroupKey() == groupKey, scope)
	}
	after, err := e2.Device(reg)
	if err != nil {
		t.Fatal(err)
	}
	after.Connected, before.Connected = false, false
	if !after.Created.Equal(before.Created) || !after.LastActivity.Equal(before.LastActivity) {
		t.Fatalf("times changed: %v/%v -> %v/%v", before.Created, before.LastActivity, after.Created, after.LastActivity)
	}
	after.Created, after.LastActivity, before.Created, before.LastActivity = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if after != before || after.ModelID != model || after.PrimaryKey != key || !after.Provisioned || after.GroupID != "default" {
		t.Fatalf("device after restart %+v, want %+v", after, before)
	}
	desired2, reported2, err := e2.Twin(reg)
	if err != nil {
		t.Fatal(err)
	}
	if jsonOf(t, desired2) != jsonOf(t, desired1) || jsonOf(t, reported2) != jsonOf(t, reported1) {
		t.Fatalf("twin after restart\n desired %s\nreported %s\nwant\n desired %s\nreported %s",
			jsonOf(t, desired2), jsonOf(t, reported2), jsonOf(t, desired1), jsonOf(t, reported1))
	}
	if n := pendingC2D(e2, reg); n != 1 {
		t.Fatalf("%d queued messages after restart, want 1", n)
	}

	// The device connects with its old key; the queued message arrives and
	// the twin continues from the kept versions.
	h2 := connectHub(t, e2, reg, key, true)
	m := recv(t, h2.c2d)
	if string(m.Payload()) != "kept" || !strings.HasSuffix(m.Topic(), "&color=blue") {
		t.Fatalf("queued message after restart: %s %q", m.Topic(), m.Payload())
	}
	status, q, _ := h2.twinRequest("$iothub/twin/PATCH/properties/reported/", []byte(`{"temp":22}`))
	if status != "204" || q.Get("$version") != "3" {
		t.Fatalf("reported patch after restart: %s version %s, want 204 version 3", status, q.Get("$version"))
	}
	// paho sends the PUBACK once its handler returned, maybe after the
	// twin request: wait for it (bounded).
	if err := e2.core.WaitPendingC2D(ctxT(t), reg, 0); err != nil {
		t.Fatalf("%d messages queued after the ack: %v", pendingC2D(e2, reg), err)
	}
}

func TestDataDirExplicitOptionsWin(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	e1, err := startData(t, Options{DataDir: dataDir, CertDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	devKey, err := e1.CreateDevice("solo")
	if err != nil {
		t.Fatal(err)
	}
	if err := e1.Close(); err != nil {
		t.Fatal(err)
	}
	groupKey := core.RandomKey()
	e2, err := startData(t, Options{DataDir: dataDir, IDScope: "0neEXPLICIT",
		Groups: []EnrollmentGroup{{ID: "mine", Enabled: true, PrimaryKey: groupKey}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e2.Close() })
	if e2.IDScope() != "0neEXPLICIT" || e2.GroupKey() != groupKey {
		t.Fatalf("explicit options lost: scope %q", e2.IDScope())
	}
	if gs := e2.EnrollmentGroups(); len(gs) != 1 || gs[0].ID != "mine" {
		t.Fatalf("groups %+v, want only mine", gs)
	}
	d, err := e2.Device("solo")
	if err != nil || d.PrimaryKey != devKey || d.GroupID != "" {
		t.Fatalf("device from the file: %+v, %v", d, err)
	}
	// The new choice is what the database now holds.
	if err := e2.Close(); err != nil {
		t.Fatal(err)
	}
	e3, err := startData(t, Options{DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e3.Close() })
	if gs := e3.EnrollmentGroups(); e3.IDScope() != "0neEXPLICIT" || len(gs) != 1 || gs[0].ID != "mine" {
		t.Fatalf("after a restart without options: scope %q, groups %+v", e3.IDScope(), gs)
	}
}

// legacyState is a valid state file of an older data directory.
const legacyState = `{
  "format": 1,
  "idScope": "0neLEGACY01",
  "enrollmentGroups": [
    {"id": "old", "enabled": true, "primaryKey": "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=", "secondaryKey": "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="}
  ],
  "devices": [
    {"id": "dev", "enabled": true, "provisioned": false, "attestation": "symmetricKey",
     "individualKeys": ["Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=", "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="],
     "groupKeys": ["", ""], "created": "2026-01-01T00:00:00Z", "lastActivity": "2026-01-01T00:00:00Z",
     "desired": {"version": 2, "properties": {"target": 30}, "metadata": {}, "updated": "2026-01-01T00:00:00Z"},
     "reported": {"version": 1, "properties": {}, "metadata": {}, "updated": "2026-01-01T00:00:00Z"},
     "cloudToDevice": [{"messageId": "m1", "topic": "devices/dev/messages/devicebound/%24.mid=m1", "body": "a2VwdA=="}]}
  ]
}`

// A data directory of an older version (state.json) is imported into the
// database once and the file renamed; a bad one stops Start, untouched.
func TestDataDirImportsLegacyStateFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, DataDirLegacyFile)
	if err := os.WriteFile(path, []byte(legacyState), 0o600); err != nil {
		t.Fatal(err)
	}
	e, err := startData(t, Options{DataDir: dir, CertDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if e.IDScope() != "0neLEGACY01" || len(e.EnrollmentGroups()) != 1 || e.core.PendingC2D("dev") != 1 {
		_ = e.Close()
		t.Fatalf("imported scope %q, groups %v, %d messages", e.IDScope(), e.EnrollmentGroups(), e.core.PendingC2D("dev"))
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + ".imported"); err != nil {
		t.Fatalf("the legacy file was not renamed: %v", err)
	}
	// From the database now.
	e2, err := startData(t, Options{DataDir: dir, CertDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if d, err := e2.Device("dev"); err != nil || e2.IDScope() != "0neLEGACY01" || e2.core.PendingC2D("dev") != 1 {
		t.Fatalf("after restart: %+v %v scope %q", d, err, e2.IDScope())
	}
	desired, _, err := e2.Twin("dev")
	if err != nil || desired["target"] != float64(30) {
		t.Fatalf("desired %v, %v", desired, err)
	}

	for name, content := range map[string]string{
		"garbage":        "not json at all",
		"truncated":      legacyState[:len(legacyState)/2],
		"empty":          "",
		"other format":   strings.Replace(legacyState, `"format": 1`, `"format": 7`, 1),
		"bad device key": strings.Replace(legacyState, `"individualKeys": ["`, `"individualKeys": ["!!`, 1),
		"bad device id":  strings.Replace(legacyState, `"id": "dev"`, `"id": "a/b"`, 1),
	} {
		t.Run(name, func(t *testing.T) {
			if content == legacyState {
				t.Fatal("the test did not change the file")
			}
			dir := t.TempDir()
			path := filepath.Join(dir, DataDirLegacyFile)
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			e, err := startData(t, Options{DataDir: dir, CertDir: t.TempDir()})
			if err == nil {
				_ = e.Close()
				t.Fatal("Start accepted a bad state file")
			}
			if !errors.Is(err, ErrDataFile) || !strings.Contains(err.Error(), path) {
				t.Fatalf("error %v, want ErrDataFile naming %s", err, path)
			}
			if got, _ := os.ReadFile(path); string(got) != content {
				t.Fatal("the bad state file was changed")
			}
		})
	}
}

// A database file that is not the emulator's stops Start with
// ErrDataFile and is left as it was.
func TestDataDirBadDatabaseIsAnErrorAndKept(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, DataDirDatabase)
	content := []byte("this is not an SQLite database, just bytes that happen to be here")
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	e, err := startData(t, Options{DataDir: dir, CertDir: t.TempDir()})
	if err == nil {
		_ = e.Close()
		t.Fatal("Start accepted a bad database")
	}
	if !errors.Is(err, ErrDataFile) {
		t.Fatalf("error %v, want ErrDataFile", err)
	}
	if got, _ := os.ReadFile(path); string(got) != string(content) {
		t.Fatal("the bad database was changed")
	}
}

// TestDataDirKeepsAPIToken: with a DataDir the API token survives a
// restart (kept in DataDirTokenFile, mode 0600); an explicit APIToken wins
// without replacing the kept one.
func TestDataDirKeepsAPIToken(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "data")
	e1, err := startData(t, Options{DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	tok := e1.APIToken()
	if err := e1.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dataDir, DataDirTokenFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v, mode %v", err, st.Mode().Perm())
	}
	e2, err := startData(t, Options{DataDir: dataDir, RESTAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if e2.APIToken() != tok {
		t.Fatal("the API token changed across a restart with the same DataDir")
	}
	if status, _ := restDo(t, e2, "GET", "/api/devices", tok, nil); status != 200 {
		t.Fatalf("the kept token is refused: %d", status)
	}
	if err := e2.Close(); err != nil {
		t.Fatal(err)
	}
	e3, err := startData(t, Options{DataDir: dataDir, APIToken: "given"})
	if err != nil {
		t.Fatal(err)
	}
	if e3.APIToken() != "given" {
		t.Fatalf("explicit token replaced by %q", e3.APIToken())
	}
	if err := e3.Close(); err != nil {
		t.Fatal(err)
	}
	e4, err := startData(t, Options{DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	if e4.APIToken() != tok {
		t.Fatal("an explicit token overwrote the kept one")
	}
	if err := e4.Close(); err != nil {
		t.Fatal(err)
	}
	// A kept file with no token is a clear start-up error.
	if err := os.WriteFile(filepath.Join(dataDir, DataDirTokenFile), []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := startData(t, Options{DataDir: dataDir}); !errors.Is(err, ErrDataFile) {
		t.Fatalf("empty token file: %v, want ErrDataFile", err)
	}
}

// An enrollment group's type (iotEdge) survives a restart with a data
// directory.
func TestDataDirKeepsGroupType(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "data")
	e1, err := startData(t, Options{DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e1.PutEnrollmentGroup(EnrollmentGroup{ID: "edge", Enabled: true, Type: "iotEdge"}); err != nil {
		_ = e1.Close()
		t.Fatal(err)
	}
	if _, err := e1.PutEnrollmentGroup(EnrollmentGroup{ID: "bad", Enabled: true, Type: "gateway"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("type gateway: %v, want ErrInvalid", err)
	}
	if err := e1.Close(); err != nil {
		t.Fatal(err)
	}
	e2, err := startData(t, Options{DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	for _, g := range e2.EnrollmentGroups() {
		if g.ID == "edge" {
			if g.Type != "iotEdge" {
				t.Fatalf("after restart type = %q", g.Type)
			}
			return
		}
	}
	t.Fatalf("group edge lost: %+v", e2.EnrollmentGroups())
}
