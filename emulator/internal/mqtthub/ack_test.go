package mqtthub

import (
	"sync"
	"testing"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// gatedModel holds StoreTelemetry until released.
type gatedModel struct {
	Model
	entered chan struct{}
	release chan struct{}
}

func (m *gatedModel) StoreTelemetry(t core.Telemetry) {
	m.entered <- struct{}{}
	<-m.release
	m.Model.StoreTelemetry(t)
}

// The PUBACK of a telemetry message leaves only once the message is
// stored: a device that saw the acknowledgement never loses the message,
// even when its connection dies right after.
func TestTelemetryStoredBeforePUBACK(t *testing.T) {
	const host, id = "hub.test", "acked"
	c := core.New(core.Config{IDScope: "0ne0", HubHost: host, TelemetryHistory: 10})
	defer c.Close()
	key, err := c.CreateDevice(id)
	if err != nil {
		t.Fatal(err)
	}
	gm := &gatedModel{Model: c, entered: make(chan struct{}, 1), release: make(chan struct{})}
	s, err := New(Config{Addr: "-", Model: gm, MaxTelemetryBody: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var once sync.Once
	release := func() { once.Do(func() { close(gm.release) }) }
	defer release() // before Close, which waits for the store
	cl, clientEnd, served := pipeDevice(t, s, host, id, key)
	defer clientEnd.Close() // ServeConn's connection ends before Close waits for it
	tok := cl.Publish("devices/"+id+"/messages/events/seq=1", 1, false, []byte(`{"t":1}`))
	select {
	case <-gm.entered:
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
