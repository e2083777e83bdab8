package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

func TestTwinSyncCallsHandlerOnlyForPendingProperties(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h := newHub(e.ctrl, `{
			"desired": {"$version": 5, "acked": 1, "stale": 2, "new": 3,
				"thermostat1": {"__t": "c", "targetTemperature": 21.5},
				"$metadata": {"acked": {"$lastUpdatedVersion": 5}, "stale": {"$lastUpdatedVersion": 5}, "new": {"$lastUpdatedVersion": 5}}},
			"reported": {"$version": 9,
				"acked": {"value": 1, "ac": 200, "av": 5},
				"stale": {"value": 1, "ac": 200, "av": 3}}}`)
		var mu sync.Mutex
		var called []string
		o := e.options()
		e.provisions(testHub, 1)
		e.hubConnects(connResult{hub: h})
		c := e.client(o)
		defer closeClient(t, c)
		c.OnProperty(func(_ context.Context, p domain.Property) domain.PropertyAck {
			mu.Lock()
			called = append(called, p.Component+"/"+p.Name+"="+string(p.Value))
			mu.Unlock()
			if p.Name == "new" {
				return domain.PropertyAck{Status: 400, Description: "out of range"}
			}
			return domain.PropertyAck{}
		})
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatalf("Connect: %v", err)
		}
		jsonEqual(t, <-h.reported, `{
			"new": {"value": 3, "ac": 400, "av": 5, "ad": "out of range"},
			"stale": {"value": 2, "ac": 200, "av": 5},
			"thermostat1": {"__t": "c", "targetTemperature": {"value": 21.5, "ac": 200, "av": 5}}}`)
		mu.Lock()
		defer mu.Unlock()
		if want := "[/new=3 /stale=2 thermostat1/targetTemperature=21.5]"; strings.Join(called, " ") != strings.Trim(want, "[]") {
			t.Errorf("handler calls %v, want %v", called, want)
		}
	})
}

func TestNoPropertyHandlerNoAutoAck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h := newHub(e.ctrl, `{"desired":{"$version":2,"fan":true},"reported":{}}`)
		c := e.connected(nil, connResult{hub: h})
		defer closeClient(t, c)
		(<-e.events).OnDesiredPatch([]byte(`{"$version":3,"fan":false}`))
		synctest.Wait()
		if len(h.reported) != 0 {
			t.Errorf("reported %s without a handler", <-h.reported)
		}
	})
}

// A desired patch at the version the twin read already handled (a common
// race right after connecting: the patch was published while the twin was
// read) is not handled or reported again.
func TestDesiredPatchAtTheTwinVersionIsNotHandledAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h := newHub(e.ctrl, `{"desired":{"$version":5,"fan":true,"$metadata":{"fan":{"$lastUpdatedVersion":5}}},"reported":{}}`)
		e.provisions(testHub, 1)
		e.hubConnects(connResult{hub: h})
		c := e.client(e.options())
		defer closeClient(t, c)
		calls := make(chan domain.Property, 4)
		c.OnProperty(func(_ context.Context, p domain.Property) domain.PropertyAck {
			calls <- p
			return domain.PropertyAck{}
		})
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatalf("Connect: %v", err)
		}
		ev := <-e.events
		jsonEqual(t, <-h.reported, `{"fan":{"value":true,"ac":200,"av":5}}`)
		if p := <-calls; p.Name != "fan" || p.Version != 5 {
			t.Fatalf("handler got %+v", p)
		}
		h.mu.Lock()
		reads := h.twinReads
		h.mu.Unlock()
		ev.OnDesiredPatch([]byte(`{"$version":5,"fan":true}`))
		synctest.Wait()
		if len(calls) != 0 || len(h.reported) != 0 {
			t.Fatalf("the patch at version 5 was handled again: %d calls, %d reports", len(calls), len(h.reported))
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.twinReads != reads {
			t.Fatalf("the patch at version 5 made the client read the twin again")
		}
	})
}

// liveEnv is a connected client with an empty twin and its event handler.
func liveEnv(t *testing.T) (*env, *Client, *hub, *wire) {
	e := newEnv(t)
	h := newHub(e.ctrl, emptyTwin)
	c := e.connected(nil, connResult{hub: h})
	return e, c, h, <-e.events
}

func TestDesiredPatch202ThenFinalAck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, c, h, ev := liveEnv(t)
		defer closeClient(t, c)
		got := make(chan domain.Property, 4)
		c.OnProperty(func(_ context.Context, p domain.Property) domain.PropertyAck {
			got <- p
			return domain.PropertyAck{Status: 202, Description: "heating up"}
		})
		h.desire(ev, `{"thermostat1":{"__t":"c","targetTemperature":30}}`)
		p := <-got
		if p.Component != "thermostat1" || p.Name != "targetTemperature" || p.Version != 2 {
			t.Fatalf("handler got %+v", p)
		}
		jsonEqual(t, <-h.reported, `{"thermostat1":{"__t":"c","targetTemperature":{"value":30,"ac":202,"av":2,"ad":"heating up"}}}`)
		if err := c.AckProperty(context.Background(), p, domain.PropertyAck{Status: 200, Value: 29.5, Description: "reached"}); err != nil {
			t.Fatalf("AckProperty: %v", err)
		}
		jsonEqual(t, <-h.reported, `{"thermostat1":{"__t":"c","targetTemperature":{"value":29.5,"ac":200,"av":2,"ad":"reached"}}}`)

		// A patch older than the one handled is not handled again.
		ev.OnDesiredPatch([]byte(`{"$version":1,"thermostat1":{"__t":"c","targetTemperature":10}}`))
		ev.OnDesiredPatch([]byte(`not json`))
		synctest.Wait()
		if len(got) != 0 {
			t.Errorf("handler called for a stale patch: %+v", <-got)
		}
	})
}

func TestPropertyHandlerPanicIsAckedWith500(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, c, h, ev := liveEnv(t)
		defer closeClient(t, c)
		c.OnProperty(func(context.Context, domain.Property) domain.PropertyAck { panic("boom") })
		ev.OnDesiredPatch([]byte(`{"$version":2,"fan":true}`))
		var ack map[string]map[string]any
		if err := json.Unmarshal([]byte(<-h.reported), &ack); err != nil {
			t.Fatal(err)
		}
		if ack["fan"]["ac"] != 500.0 || !strings.Contains(ack["fan"]["ad"].(string), "boom") {
			t.Errorf("ack %v", ack)
		}
		// The worker survived: the next patch is handled.
		c.OnProperty(func(context.Context, domain.Property) domain.PropertyAck { return domain.PropertyAck{} })
		ev.OnDesiredPatch([]byte(`{"$version":3,"fan":false}`))
		jsonEqual(t, <-h.reported, `{"fan":{"value":false,"ac":200,"av":3}}`)
	})
}

func TestSlowPropertyHandlerDoesNotStallCommandsOrTransport(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, c, h, ev := liveEnv(t)
		defer closeClient(t, c)
		release := make(chan struct{})
		var order []string
		c.OnProperty(func(_ context.Context, p domain.Property) domain.PropertyAck {
			<-release
			order = append(order, string(p.Value))
			return domain.PropertyAck{}
		})
		c.OnCommand(func(context.Context, domain.Command) domain.CommandResponse {
			return domain.CommandResponse{Payload: "pong"}
		})
		// Each call returns at once although the handler is blocked.
		for i, v := range []string{"1", "2", "3"} {
			ev.OnDesiredPatch(fmt.Appendf(nil, `{"$version":%d,"p":%s}`, i+2, v))
		}
		ev.OnMethod(ports.MethodRequest{Method: "ping", RequestID: "9"})
		if r := <-h.responses; r.rid != "9" || r.status != 200 || r.body != `"pong"` {
			t.Errorf("response %+v", r)
		}
		close(release)
		for range 3 {
			<-h.reported
		}
		if strings.Join(order, ",") != "1,2,3" {
			t.Errorf("patches handled in order %v", order)
		}
	})
}

func TestCommands(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, c, h, ev := liveEnv(t)
		defer closeClient(t, c)

		// No handler: 501 with a JSON error.
		ev.OnMethod(ports.MethodRequest{Method: "reboot", RequestID: "1"})
		r := <-h.responses
		if r.rid != "1" || r.status != 501 || !json.Valid([]byte(r.body)) || !strings.Contains(r.body, "error") {
			t.Errorf("no handler: %+v", r)
		}

		got := make(chan domain.Command, 4)
		c.OnCommand(func(_ context.Context, req domain.Command) domain.CommandResponse {
			got <- req
			switch req.Name {
			case "crash":
				panic("handler bug")
			case "huge":
				return domain.CommandResponse{Payload: strings.Repeat("x", domain.MaxMethodPayloadSize)}
			}
			return domain.CommandResponse{Status: 201, Payload: map[string]any{"max": 30.5}}
		})
		ev.OnMethod(ports.MethodRequest{Method: "thermostat1*getMaxMinReport", RequestID: "2", Payload: []byte(`"2024-01-01T00:00:00Z"`)})
		req := <-got
		if req.Component != "thermostat1" || req.Name != "getMaxMinReport" || req.RequestID != "2" || string(req.Payload) != `"2024-01-01T00:00:00Z"` || req.Queued {
			t.Errorf("request %+v", req)
		}
		if r := <-h.responses; r.rid != "2" || r.status != 201 || r.body != `{"max":30.5}` {
			t.Errorf("response %+v", r)
		}

		ev.OnMethod(ports.MethodRequest{Method: "reboot", RequestID: "3"})
		if req := <-got; req.Component != "" || req.Name != "reboot" || req.Payload != nil {
			t.Errorf("root request %+v", req)
		}
		<-h.responses

		ev.OnMethod(ports.MethodRequest{Method: "crash", RequestID: "4"})
		<-got
		if r := <-h.responses; r.rid != "4" || r.status != 500 || !strings.Contains(r.body, "handler bug") {
			t.Errorf("panic response %+v", r)
		}

		ev.OnMethod(ports.MethodRequest{Method: "huge", RequestID: "5"})
		<-got
		if r := <-h.responses; r.rid != "5" || r.status != 500 || !json.Valid([]byte(r.body)) {
			t.Errorf("oversized response %+v", r)
		}
	})
}

func TestQueuedCommandsAndCloudMessages(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, c, _, ev := liveEnv(t)
		defer closeClient(t, c)
		var mu sync.Mutex
		var log []string
		note := func(s string) { mu.Lock(); log = append(log, s); mu.Unlock() }
		settled := make(chan string, 8)
		send := func(id string, props map[string]string, body string) {
			props["$.mid"] = id
			ev.OnCloudMessage(domain.CloudMessage{Body: []byte(body), Properties: props}, func(o domain.Outcome) {
				note("settle " + id + " " + o.String())
				settled <- id
			})
		}
		c.OnQueuedCommand(func(_ context.Context, req domain.Command) domain.Outcome {
			if !req.Queued || req.RequestID != "" {
				t.Errorf("queued request %+v", req)
			}
			note("queued " + req.Component + "/" + req.Name + " " + string(req.Payload))
			switch req.Name {
			case "explode":
				panic("queued handler bug")
			case "later":
				return domain.Abandon
			}
			return domain.Complete
		})
		c.OnCloudMessage(func(_ context.Context, m domain.CloudMessage) domain.Outcome {
			note("message " + m.MessageID() + " " + string(m.Body))
			if string(m.Body) == "garbage" {
				return domain.Reject
			}
			return domain.Complete
		})
		send("a", map[string]string{"method-name": "Commands:setLed"}, `{"on":true}`)
		send("b", map[string]string{"method-name": "thermostat1*reboot"}, `5`)
		send("c", map[string]string{"method-name": "explode"}, ``)
		send("d", map[string]string{"color": "red"}, `hello`)
		send("f", map[string]string{"method-name": "later"}, ``)
		send("g", map[string]string{}, `garbage`)
		send("h", map[string]string{"method-name": "Commands:"}, ``)
		for range 7 {
			<-settled
		}
		mu.Lock()
		got := strings.Join(log, "\n")
		mu.Unlock()
		want := strings.Join([]string{
			`queued /setLed {"on":true}`, "settle a complete",
			"queued thermostat1/reboot 5", "settle b complete",
			"queued /explode ", "settle c reject",
			"message d hello", "settle d complete",
			"queued /later ", "settle f abandon",
			"message g garbage", "settle g reject",
			"settle h reject",
		}, "\n")
		if got != want {
			t.Errorf("got\n%s\nwant\n%s", got, want)
		}

		// Without a queued-command handler the command handler gets them.
		c.OnQueuedCommand(nil)
		cmds := make(chan domain.Command, 1)
		c.OnCommand(func(_ context.Context, req domain.Command) domain.CommandResponse {
			cmds <- req
			return domain.CommandResponse{}
		})
		send("e", map[string]string{"method-name": "Commands:comp*setLed"}, `{}`)
		<-settled
		if req := <-cmds; !req.Queued || req.Component != "comp" || req.Name != "setLed" {
			t.Errorf("fallback request %+v", req)
		}
	})
}

func TestSendTelemetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h := newHub(e.ctrl, emptyTwin)
		e.provisions(testHub, 1)
		e.hubConnects(connResult{hub: h})
		c := e.client(e.options())
		defer closeClient(t, c)
		ctx := context.Background()
		if err := c.SendTelemetry(ctx, domain.Message{Body: []byte("{}")}); !errors.Is(err, domain.ErrNotConnected) {
			t.Fatalf("before Connect: %v", err)
		}
		if err := c.Connect(ctx, nil); err != nil {
			t.Fatal(err)
		}
		big := domain.Message{Body: make([]byte, domain.MaxTelemetrySize+1)}
		if err := c.SendTelemetry(ctx, big); !errors.Is(err, domain.ErrMessageTooLarge) {
			t.Errorf("oversized: %v", err)
		}
		if err := c.SendTelemetry(ctx, domain.Message{Body: []byte("{}"), Properties: map[string]string{"$.sub": "x"}}); !errors.Is(err, domain.ErrInvalidConfig) {
			t.Errorf("reserved property: %v", err)
		}
		if err := c.SendTelemetry(ctx, domain.Message{Body: []byte(`{"t":1}`), Component: "thermostat1"}); err != nil {
			t.Fatal(err)
		}
		m := <-h.sent
		if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(m.MessageID) {
			t.Errorf("message id %q", m.MessageID)
		}
		if m.ContentType != domain.DefaultContentType || m.ContentEncoding != domain.DefaultContentEncoding || m.Component != "thermostat1" {
			t.Errorf("message %+v", m)
		}
		if err := c.SendTelemetry(ctx, domain.Message{Body: []byte(`{}`), MessageID: "mine"}); err != nil {
			t.Fatal(err)
		}
		if m := <-h.sent; m.MessageID != "mine" {
			t.Errorf("message id %q, want the caller's", m.MessageID)
		}
		if len(h.sent) != 0 {
			t.Error("an invalid message was sent")
		}
	})
}

func TestReportPropertiesAndFetchTwin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h := newHub(e.ctrl, `{"desired":{"$version":3,"a":1},"reported":{"$version":8,"a":{"value":1,"ac":200,"av":3}}}`)
		c := e.connected(nil, connResult{hub: h})
		defer closeClient(t, c)
		ctx := context.Background()
		if err := c.ReportProperties(ctx, "deviceInformation", map[string]any{"manufacturer": "Contoso"}); err != nil {
			t.Fatal(err)
		}
		jsonEqual(t, <-h.reported, `{"deviceInformation":{"__t":"c","manufacturer":"Contoso"}}`)
		if err := c.ReportProperties(ctx, "", map[string]any{"serial": "X1"}); err != nil {
			t.Fatal(err)
		}
		jsonEqual(t, <-h.reported, `{"serial":"X1"}`)
		if err := c.ReportProperties(ctx, "", map[string]any{"big": strings.Repeat("x", domain.MaxTwinSectionSize)}); !errors.Is(err, domain.ErrMessageTooLarge) {
			t.Errorf("oversized report: %v", err)
		}
		twin, err := c.FetchTwin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// The hub's twin took both reports: version 8 plus two.
		if twin.DesiredVersion != 3 || twin.ReportedVersion != 10 || len(twin.PendingDesired()) != 0 || twin.Reported["serial"] != "X1" {
			t.Errorf("twin %+v", twin)
		}
	})
}

func TestQueueIsBoundedAndOrdered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var got []int
		q := new(queue[int])
		q.init(context.Background(), 2, nil, func(v int) {
			<-release
			got = append(got, v)
		})
		if !q.push(1) {
			t.Fatal("push 1 refused")
		}
		synctest.Wait() // the drainer holds 1
		if !q.push(2) || !q.push(3) || q.push(4) {
			t.Fatal("a queue of 2 accepted a third waiting item or refused one of the first two")
		}
		close(release)
		q.stop()
		if q.push(5) {
			t.Fatal("a stopped queue accepted an item")
		}
		if len(got) != 3 || got[0] != 1 || got[1] != 2 || got[2] != 3 {
			t.Fatalf("drained %v", got)
		}
	})
}

func TestQueueRunsNoGoroutineWhenIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ran := make(chan int, 4)
		q := new(queue[int])
		q.init(context.Background(), 0, nil, func(v int) { ran <- v })
		q.push(1)
		synctest.Wait()
		// synctest.Test fails if a goroutine of the bubble is left
		// blocked; the drainer must have exited once the queue emptied.
		q.mu.Lock()
		running := q.running
		q.mu.Unlock()
		if running || len(ran) != 1 {
			t.Fatalf("after one item: running=%v handled=%d", running, len(ran))
		}
		q.stop()
	})
}

func TestFinalAckDuringHandlerSupersedesIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, c, h, ev := liveEnv(t)
		defer closeClient(t, c)
		started, release := make(chan domain.Property), make(chan struct{})
		c.OnProperty(func(ctx context.Context, p domain.Property) domain.PropertyAck {
			if p.Name == "inside" {
				// The final answer given from inside the handler wins.
				if err := c.AckProperty(ctx, p, domain.PropertyAck{Status: 200, Description: "done inside"}); err != nil {
					t.Errorf("AckProperty inside the handler: %v", err)
				}
				return domain.PropertyAck{Status: 202}
			}
			started <- p
			<-release
			return domain.PropertyAck{Status: 202, Description: "working"}
		})
		ev.OnDesiredPatch([]byte(`{"$version":2,"inside":1}`))
		jsonEqual(t, <-h.reported, `{"inside":{"value":1,"ac":200,"av":2,"ad":"done inside"}}`)

		ev.OnDesiredPatch([]byte(`{"$version":3,"outside":1}`))
		p := <-started
		// Another goroutine answers before the handler returned its 202.
		if err := c.AckProperty(context.Background(), p, domain.PropertyAck{Status: 200, Description: "done"}); err != nil {
			t.Fatalf("AckProperty: %v", err)
		}
		synctest.Wait()
		if len(h.reported) != 0 {
			t.Fatalf("final ack reported before the handler returned: %s", <-h.reported)
		}
		close(release)
		jsonEqual(t, <-h.reported, `{"outside":{"value":1,"ac":200,"av":3,"ad":"done"}}`)
		synctest.Wait()
		if len(h.reported) != 0 {
			t.Errorf("the superseded 202 was reported after the final ack: %s", <-h.reported)
		}
		// Outside the handler, AckProperty reports at once.
		if err := c.AckProperty(context.Background(), p, domain.PropertyAck{Status: 500, Description: "broke later"}); err != nil {
			t.Fatal(err)
		}
		jsonEqual(t, <-h.reported, `{"outside":{"value":1,"ac":500,"av":3,"ad":"broke later"}}`)
	})
}
