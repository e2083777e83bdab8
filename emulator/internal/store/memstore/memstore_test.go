package memstore_test

import (
	"errors"
	"testing"

	"go.uber.org/goleak"

	"github.com/iotc-go/iotc/emulator/internal/core"
	"github.com/iotc-go/iotc/emulator/internal/store/memstore"
	"github.com/iotc-go/iotc/emulator/internal/store/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestContract(t *testing.T) {
	storetest.Run(t,
		func(t *testing.T) core.Store { return memstore.New() },
		func(t *testing.T, closed core.Store) core.Store {
			s, err := closed.(*memstore.Store).Reopen()
			if err != nil {
				t.Fatal(err)
			}
			return s
		})
}

func TestReopenOfOpenStoreFails(t *testing.T) {
	s := memstore.New()
	if _, err := s.Reopen(); !errors.Is(err, core.ErrStore) {
		t.Fatalf("Reopen of an open store = %v, want an error wrapping core.ErrStore", err)
	}
}

func TestStatsCountEachApply(t *testing.T) {
	s := memstore.New()
	for range 3 {
		if err := <-s.Apply([]core.Change{{Op: core.OpPut, Record: core.Record{Kind: core.KindDevice, Key: "d", Doc: []byte(`{}`)}}}); err != nil {
			t.Fatal(err)
		}
	}
	if st := s.Stats(); st != (core.StoreStats{Commits: 3, Units: 3, Changes: 3, MaxUnits: 1}) {
		t.Fatalf("stats %+v", st)
	}
}
