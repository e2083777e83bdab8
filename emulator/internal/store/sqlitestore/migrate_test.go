package sqlitestore

import (
	"context"
	"fmt"
	"testing"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// TestMigratesVersion1: a database written at schema version 1 (before the
// events table) opens, keeps its records, is at SchemaVersion after, and
// takes event records.
func TestMigratesVersion1(t *testing.T) {
	path := rawFile(t,
		migrations[0],
		fmt.Sprintf(`PRAGMA application_id = %d`, applicationID),
		`PRAGMA user_version = 1`,
		`INSERT INTO devices (id, doc) VALUES ('dev1', '{"id":"dev1"}')`,
		`INSERT INTO telemetry (seq, device, doc) VALUES (1, 'dev1', '{"t":1}')`,
	)
	s, err := Open(context.Background(), path, Options{})
	if err != nil {
		t.Fatalf("Open of a version 1 file: %v", err)
	}
	ev := core.Record{Kind: core.KindEvent, Device: "hub/0", Seq: 1, Doc: []byte(`{"b":"x"}`)}
	if err := <-s.Apply([]core.Change{put(ev)}); err != nil {
		t.Fatalf("event after migration: %v", err)
	}
	recs, err := s.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, r := range recs {
		kinds = append(kinds, fmt.Sprintf("%s %s %s %d %s", r.Kind, r.Device, r.Key, r.Seq, r.Doc))
	}
	want := []string{
		`device  dev1 0 {"id":"dev1"}`,
		`telemetry dev1  1 {"t":1}`,
		`event hub/0  1 {"b":"x"}`,
	}
	if fmt.Sprint(kinds) != fmt.Sprint(want) {
		t.Fatalf("records after migration:\n%q\nwant\n%q", kinds, want)
	}
	var v int
	if err := rawDB(t, path).QueryRow(`PRAGMA user_version`).Scan(&v); err != nil || v != SchemaVersion {
		t.Fatalf("user_version %d (%v), want %d", v, err, SchemaVersion)
	}
}
