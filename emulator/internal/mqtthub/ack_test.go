package mqtthub

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// gatedStore commits telemetry only when released (everything else at
// once), as a slow disk would.
type gatedStore struct {
	entered chan struct{}
	release chan struct{}
}

func (g *gatedStore) Load(context.Context) ([]core.Record, error) { return nil, nil }
func (g *gatedStore) Stats() core.StoreStats                      { return core.StoreStats{} }
func (g *gatedStore) Close() error                                { return nil }
func (g *gatedStore) Apply(changes []core.Change) <-chan error {
	ch := make(chan error, 1)
	if changes[0].Record.Kind != core.KindTelemetry {
		ch <- nil
		return ch
	}
	g.entered <- struct{}{}
	go func() {
		<-g.release
		ch <- nil
	}()
	return ch
}

// The PUBACK of a telemetry message leaves only once the message is
// committed to the store: a device that saw the acknowledgement never
// loses the message, even when the emulator dies right after.
func TestTelemetryStoredBeforePUBACK(t *testing.T) {
	const host, id = "hub.test", "acked"
	gs := &gatedStore{entered: make(chan struct{}, 1), release: make(chan struct{})}
	c := core.New(core.Config{IDScope: "0ne0", HubHost: host, TelemetryHistory: 10, Store: gs})
	defer c.Close()
	key, err := c.CreateDevice(id)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Addr: "-", Model: c, MaxTelemetryBody: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var once sync.Once
	release := func() { once.Do(func() { close(gs.release) }) }
	defer release() // before Close, which waits for the store
	cl, clientEnd, served := pipeDevice(t, s, host, id, key)
	defer clientEnd.Close() // ServeConn's connection ends before Close waits for it
	tok := cl.Publish("devices/"+id+"/messages/events/seq=1", 1, false, []byte(`{"t":1}`))
	select {
	case <-gs.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the message never reached the store")
	}
	if tok.WaitTimeout(200 * time.Millisecond) { // a lower bound: the PUBACK must not come while the store waits
		t.Fatalf("PUBACK arrived before the message was stored (err %v)", tok.Error())
	}
	release()
	if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	hist, err := c.TelemetryHistory(id, core.HistoryFilter{})
	if err != nil || len(hist) != 1 || hist[0].Properties["seq"] != "1" {
		t.Fatalf("history %+v, %v", hist, err)
	}
	cl.Disconnect(100)
	s.Close()
	<-served
}
