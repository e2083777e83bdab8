package emulator

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2"
	"nhooyr.io/websocket"
)

// ehTLS trusts the emulator's CA.
func ehTLS(e *Emulator) *tls.Config {
	cfg := e.EventHubsClientTLS()
	if cfg.ServerName != e.HubHost() || cfg.RootCAs == nil {
		panic("EventHubsClientTLS")
	}
	return cfg
}

func ehConsumer(t *testing.T, e *Emulator, entity, group string) *azeventhubs.ConsumerClient {
	t.Helper()
	cs, err := e.EventHubsConnectionString(entity)
	if err != nil {
		t.Fatal(err)
	}
	c, err := azeventhubs.NewConsumerClientFromConnectionString(cs, "", group, &azeventhubs.ConsumerClientOptions{TLSConfig: ehTLS(e)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func ehProducer(t *testing.T, e *Emulator, entity string) *azeventhubs.ProducerClient {
	t.Helper()
	cs, err := e.EventHubsConnectionString(entity)
	if err != nil {
		t.Fatal(err)
	}
	p, err := azeventhubs.NewProducerClientFromConnectionString(cs, "", &azeventhubs.ProducerClientOptions{TLSConfig: ehTLS(e)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	return p
}

// ehSend publishes n messages of device id over MQTT (QoS 1, so
// each is stored when publish returns), with a message id, content type
// and an application property.
func ehSend(t *testing.T, e *Emulator, id string, n int) {
	t.Helper()
	key, err := e.CreateDevice(id)
	if err != nil && !errors.Is(err, ErrConflict) {
		t.Fatal(err)
	}
	if key == "" {
		d, _ := e.Device(id)
		key = d.PrimaryKey
	}
	d := connectHub(t, e, id, key, true)
	for i := range n {
		topic := fmt.Sprintf("devices/%s/messages/events/$.mid=m-%d&$.cid=c-%d&$.ct=application%%2Fjson&$.ce=utf-8&app=v%d", id, i, i, i)
		d.publish(topic, 1, fmt.Appendf(nil, `{"i":%d}`, i))
	}
	d.close()
}

// readPartition receives n events of a partition from start.
func readPartition(t *testing.T, c *azeventhubs.ConsumerClient, partition string, start azeventhubs.StartPosition, n int) []*azeventhubs.ReceivedEventData {
	t.Helper()
	pc, err := c.NewPartitionClient(partition, &azeventhubs.PartitionClientOptions{StartPosition: start})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close(context.Background())
	var out []*azeventhubs.ReceivedEventData
	ctx := ctxT(t)
	for len(out) < n {
		evs, err := pc.ReceiveEvents(ctx, n-len(out), nil)
		if err != nil {
			t.Fatalf("ReceiveEvents after %d of %d: %v", len(out), n, err)
		}
		out = append(out, evs...)
	}
	return out
}

// partitionOfDevice finds the one partition holding events.
func nonEmptyPartitions(t *testing.T, c *azeventhubs.ConsumerClient) map[string]azeventhubs.PartitionProperties {
	t.Helper()
	hp, err := c.GetEventHubProperties(ctxT(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]azeventhubs.PartitionProperties{}
	for _, id := range hp.PartitionIDs {
		pp, err := c.GetPartitionProperties(ctxT(t), id, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !pp.IsEmpty {
			out[id] = pp
		}
	}
	return out
}

// TestEventHubsBuiltinEndpoint: azeventhubs reads device-to-cloud messages
// from the built-in endpoint with the properties and annotations IoT Hub
// gives them, all of a device's messages in one partition.
func TestEventHubsBuiltinEndpoint(t *testing.T) {
	e := startEmu(t, nil)
	before := time.Now().Add(-time.Second)
	ehSend(t, e, "eh-dev1", 3)
	c := ehConsumer(t, e, e.BuiltinEventHub(), azeventhubs.DefaultConsumerGroup)

	hp, err := c.GetEventHubProperties(ctxT(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if hp.Name != e.BuiltinEventHub() || strings.Join(hp.PartitionIDs, ",") != "0,1,2,3" || hp.CreatedOn.IsZero() {
		t.Fatalf("hub properties %+v", hp)
	}
	parts := nonEmptyPartitions(t, c)
	if len(parts) != 1 {
		t.Fatalf("a device's messages are in %d partitions: %v", len(parts), parts)
	}
	var pid string
	for id, pp := range parts {
		pid = id
		if pp.BeginningSequenceNumber != 0 || pp.LastEnqueuedSequenceNumber != 2 || pp.LastEnqueuedOn.Before(before) || pp.PartitionID != id {
			t.Fatalf("partition properties %+v", pp)
		}
	}
	evs := readPartition(t, c, pid, azeventhubs.StartPosition{EnqueuedTime: &before}, 3)
	for i, ev := range evs {
		if string(ev.Body) != fmt.Sprintf(`{"i":%d}`, i) || *ev.MessageID != fmt.Sprintf("m-%d", i) ||
			ev.CorrelationID != fmt.Sprintf("c-%d", i) || ev.ContentType == nil || *ev.ContentType != "application/json" ||
			ev.Properties["app"] != fmt.Sprintf("v%d", i) || ev.SequenceNumber != int64(i) || ev.EnqueuedTime == nil || ev.EnqueuedTime.Before(before) {
			t.Fatalf("event %d: body %s, message id %v, correlation id %v, content type %v, properties %v, seq %d, enqueued %v",
				i, ev.Body, ev.MessageID, ev.CorrelationID, ev.ContentType, ev.Properties, ev.SequenceNumber, ev.EnqueuedTime)
		}
		sp := ev.SystemProperties
		if sp["iothub-connection-device-id"] != "eh-dev1" || sp["iothub-message-source"] != "Telemetry" ||
			sp["iothub-connection-auth-method"] == nil || sp["iothub-connection-auth-generation-id"] == nil || sp["iothub-enqueuedtime"] == nil {
			t.Fatalf("event %d system properties %v", i, sp)
		}
		if ev.RawAMQPMessage.Properties == nil || ev.RawAMQPMessage.Properties.ContentEncoding == nil || *ev.RawAMQPMessage.Properties.ContentEncoding != "utf-8" {
			t.Fatalf("event %d content encoding missing", i)
		}
	}
	// Resume after a sequence number, and from an offset.
	rest := readPartition(t, c, pid, azeventhubs.StartPosition{SequenceNumber: to.Ptr[int64](0)}, 2)
	if rest[0].SequenceNumber != 1 || rest[1].SequenceNumber != 2 {
		t.Fatalf("after sequence number 0: %d, %d", rest[0].SequenceNumber, rest[1].SequenceNumber)
	}
	incl := readPartition(t, c, pid, azeventhubs.StartPosition{SequenceNumber: to.Ptr[int64](1), Inclusive: true}, 1)
	if incl[0].SequenceNumber != 1 {
		t.Fatalf("from sequence number 1 inclusive: %d", incl[0].SequenceNumber)
	}
	off := readPartition(t, c, pid, azeventhubs.StartPosition{Offset: to.Ptr(evs[1].Offset)}, 1)
	if off[0].SequenceNumber != 2 {
		t.Fatalf("after offset %s: sequence number %d", evs[1].Offset, off[0].SequenceNumber)
	}
	// A new message reaches a reader waiting at the end.
	pc, err := c.NewPartitionClient(pid, &azeventhubs.PartitionClientOptions{StartPosition: azeventhubs.StartPosition{Latest: to.Ptr(true)}})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close(context.Background())
	got := make(chan []*azeventhubs.ReceivedEventData, 1)
	go func() {
		evs, _ := pc.ReceiveEvents(ctxT(t), 1, nil)
		got <- evs
	}()
	// The link is attached once ReceiveEvents has started; a message sent
	// before that would be before "latest" too, so send until one arrives.
	deadline := time.After(wait)
	for i := 0; ; i++ {
		ehSend(t, e, "eh-dev1", 1)
		select {
		case evs := <-got:
			if len(evs) != 1 || evs[0].SequenceNumber < 3 {
				t.Fatalf("latest: %v", evs)
			}
			return
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			t.Fatal("no event reached a reader at the end")
		}
	}
}

// TestEventHubsConsumerGroupsAndEpochs: a consumer group made through the
// API reads the same events; an unknown group is refused; a higher epoch
// takes the partition, a lower one is refused.
func TestEventHubsConsumerGroupsAndEpochs(t *testing.T) {
	e := startEmu(t, &Options{EventHubs: EventHubsOptions{ConsumerGroups: []string{"by-option"}}})
	ehSend(t, e, "eh-dev2", 2)
	if err := e.CreateConsumerGroup(e.BuiltinEventHub(), "mine"); err != nil {
		t.Fatal(err)
	}
	if err := e.CreateConsumerGroup(e.BuiltinEventHub(), "bad/name"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad consumer group name: %v", err)
	}
	if gs, _ := e.EventHubConsumerGroups(e.BuiltinEventHub()); strings.Join(gs, ",") != "$Default,by-option,mine" {
		t.Fatalf("consumer groups %v", gs)
	}
	var pid string
	for id := range nonEmptyPartitions(t, ehConsumer(t, e, e.BuiltinEventHub(), "$Default")) {
		pid = id
	}
	for _, g := range []string{"mine", "by-option"} {
		evs := readPartition(t, ehConsumer(t, e, e.BuiltinEventHub(), g), pid, azeventhubs.StartPosition{Earliest: to.Ptr(true)}, 2)
		if len(evs) != 2 || string(evs[1].Body) != `{"i":1}` {
			t.Fatalf("group %s read %v", g, evs)
		}
	}
	unknown := ehConsumer(t, e, e.BuiltinEventHub(), "nobody")
	pc, err := unknown.NewPartitionClient(pid, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close(context.Background())
	if _, err := pc.ReceiveEvents(ctxT(t), 1, nil); err == nil || !strings.Contains(err.Error(), "not-found") {
		t.Fatalf("unknown consumer group: %v", err)
	}

	c := ehConsumer(t, e, e.BuiltinEventHub(), "mine")
	open := func(level int64) *azeventhubs.PartitionClient {
		pc, err := c.NewPartitionClient(pid, &azeventhubs.PartitionClientOptions{OwnerLevel: &level, StartPosition: azeventhubs.StartPosition{Earliest: to.Ptr(true)}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = pc.Close(context.Background()) })
		return pc
	}
	first := open(1)
	if evs, err := first.ReceiveEvents(ctxT(t), 2, nil); err != nil || len(evs) != 2 {
		t.Fatalf("epoch 1: %d events, %v", len(evs), err)
	}
	second := open(2)
	if evs, err := second.ReceiveEvents(ctxT(t), 2, nil); err != nil || len(evs) != 2 {
		t.Fatalf("epoch 2: %d events, %v", len(evs), err)
	}
	var ehErr *azeventhubs.Error
	if _, err := first.ReceiveEvents(ctxT(t), 1, nil); !errors.As(err, &ehErr) || ehErr.Code != azeventhubs.ErrorCodeOwnershipLost {
		t.Fatalf("epoch 1 after epoch 2: %v, want ownership lost", err)
	}
	// A lower epoch is refused at attach with amqp:link:stolen (azeventhubs
	// retries a refused attach, so this client does not retry).
	cs, _ := e.EventHubsConnectionString(e.BuiltinEventHub())
	noRetry, err := azeventhubs.NewConsumerClientFromConnectionString(cs, "", "mine", &azeventhubs.ConsumerClientOptions{
		TLSConfig: ehTLS(e), RetryOptions: azeventhubs.RetryOptions{MaxRetries: -1}})
	if err != nil {
		t.Fatal(err)
	}
	defer noRetry.Close(context.Background())
	lower, err := noRetry.NewPartitionClient(pid, &azeventhubs.PartitionClientOptions{OwnerLevel: to.Ptr[int64](0)})
	if err != nil {
		t.Fatal(err)
	}
	defer lower.Close(context.Background())
	if _, err := lower.ReceiveEvents(ctxT(t), 1, nil); err == nil || !strings.Contains(err.Error(), "amqp:link:stolen") {
		t.Fatalf("epoch 0 while epoch 2 holds: %v, want amqp:link:stolen", err)
	}
	// The epoch 2 receiver still reads.
	ehSend(t, e, "eh-dev2", 1)
	if evs, err := second.ReceiveEvents(ctxT(t), 1, nil); err != nil || len(evs) != 1 {
		t.Fatalf("epoch 2 after the refusal: %d events, %v", len(evs), err)
	}
}

// TestEventHubsProducerBatch: a ProducerClient batch to a plain event hub
// is accepted and read back, with partition keys keeping their partition.
func TestEventHubsProducerBatch(t *testing.T) {
	e := startEmu(t, &Options{EventHubs: EventHubsOptions{Entities: []string{"logs"}, Partitions: 2}})
	if names := e.EventHubNames(); len(names) != 2 || names[1] != "logs" {
		t.Fatalf("entities %v", names)
	}
	p := ehProducer(t, e, "logs")
	batch, err := p.NewEventDataBatch(ctxT(t), &azeventhubs.EventDataBatchOptions{PartitionKey: to.Ptr("k1")})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := batch.AddEventData(&azeventhubs.EventData{Body: fmt.Appendf(nil, "line %d", i), Properties: map[string]any{"n": int64(i)}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.SendEventDataBatch(ctxT(t), batch, nil); err != nil {
		t.Fatalf("SendEventDataBatch: %v", err)
	}
	c := ehConsumer(t, e, "logs", "$Default")
	parts := nonEmptyPartitions(t, c)
	if len(parts) != 1 {
		t.Fatalf("one partition key in %d partitions", len(parts))
	}
	for id := range parts {
		evs := readPartition(t, c, id, azeventhubs.StartPosition{Earliest: to.Ptr(true)}, 5)
		for i, ev := range evs {
			if string(ev.Body) != fmt.Sprintf("line %d", i) || ev.Properties["n"] != int64(i) || ev.PartitionKey == nil || *ev.PartitionKey != "k1" {
				t.Fatalf("event %d: %s %v %v", i, ev.Body, ev.Properties, ev.PartitionKey)
			}
		}
	}
	// The built-in endpoint takes no producer.
	bp := ehProducer(t, e, e.BuiltinEventHub())
	b2, err := bp.NewEventDataBatch(ctxT(t), nil)
	if err == nil {
		_ = b2.AddEventData(&azeventhubs.EventData{Body: []byte("x")}, nil)
		err = bp.SendEventDataBatch(ctxT(t), b2, nil)
	}
	if err == nil {
		t.Fatal("a producer sent to the built-in endpoint")
	}
}

// TestEventHubsWrongKey: a connection string with another key is refused.
func TestEventHubsWrongKey(t *testing.T) {
	e := startEmu(t, &Options{EventHubs: EventHubsOptions{Entities: []string{"logs"}}})
	cs, _ := e.EventHubsConnectionString("logs")
	i := strings.Index(cs, "SharedAccessKey=")
	bad := cs[:i] + "SharedAccessKey=" + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" + cs[strings.Index(cs, ";EntityPath"):]
	c, err := azeventhubs.NewConsumerClientFromConnectionString(bad, "", "$Default", &azeventhubs.ConsumerClientOptions{
		TLSConfig: ehTLS(e), RetryOptions: azeventhubs.RetryOptions{MaxRetries: -1}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if _, err := c.GetEventHubProperties(ctxT(t), nil); err == nil {
		t.Fatal("a wrong key read the event hub's properties")
	}
	if _, err := e.EventHubsConnectionString("nothere"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown entity: %v", err)
	}
}

// TestEventHubsDataDir: events, sequence numbers, the namespace key and
// consumer groups made through the API survive a restart with DataDir;
// retention by count drops the oldest.
func TestEventHubsDataDir(t *testing.T) {
	dir := t.TempDir()
	opts := func() *Options {
		return &Options{DataDir: dir, CertDir: filepath.Join(dir, "certs"), EventHubs: EventHubsOptions{RetentionCount: 3}}
	}
	e1 := startEmu(t, opts())
	ehSend(t, e1, "eh-dev3", 4)
	if err := e1.CreateConsumerGroup(e1.BuiltinEventHub(), "kept"); err != nil {
		t.Fatal(err)
	}
	cs1, _ := e1.EventHubsConnectionString(e1.BuiltinEventHub())
	if err := e1.Close(); err != nil {
		t.Fatal(err)
	}
	e2 := startEmu(t, opts())
	cs2, _ := e2.EventHubsConnectionString(e2.BuiltinEventHub())
	if strip := func(s string) string { return s[strings.Index(s, ";"):] }; strip(cs1) != strip(cs2) {
		t.Fatal("the connection string changed across a restart")
	}
	if gs, _ := e2.EventHubConsumerGroups(e2.BuiltinEventHub()); strings.Join(gs, ",") != "$Default,kept" {
		t.Fatalf("consumer groups after restart %v", gs)
	}
	c := ehConsumer(t, e2, e2.BuiltinEventHub(), "kept")
	parts := nonEmptyPartitions(t, c)
	for id, pp := range parts {
		if pp.BeginningSequenceNumber != 1 || pp.LastEnqueuedSequenceNumber != 3 {
			t.Fatalf("after restart, retention 3: %+v", pp)
		}
		evs := readPartition(t, c, id, azeventhubs.StartPosition{Earliest: to.Ptr(true)}, 3)
		if evs[0].SequenceNumber != 1 || string(evs[2].Body) != `{"i":3}` {
			t.Fatalf("after restart: first seq %d, last body %s", evs[0].SequenceNumber, evs[2].Body)
		}
	}
	if len(parts) != 1 {
		t.Fatalf("%d partitions hold events", len(parts))
	}
	ehSend(t, e2, "eh-dev3", 1)
	for _, pp := range nonEmptyPartitions(t, c) {
		if pp.LastEnqueuedSequenceNumber != 4 {
			t.Fatalf("sequence numbers restarted: %+v", pp)
		}
	}
}

// TestEventHubsOverWebSockets: azeventhubs reaches the endpoint with AMQP
// over WebSockets at /$servicebus/websocket on the WebSocket listener.
func TestEventHubsOverWebSockets(t *testing.T) {
	e := startEmu(t, &Options{EventHubs: EventHubsOptions{Entities: []string{"logs"}}})
	cs, _ := e.EventHubsConnectionString("logs")
	var paths []string
	dialWS := func(ctx context.Context, args azeventhubs.WebSocketConnParams) (net.Conn, error) {
		u, err := url.Parse(args.Host)
		if err != nil {
			return nil, err
		}
		paths = append(paths, u.Path)
		u.Host = e.WebSocketAddr()
		c, _, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{
			Subprotocols: []string{"AMQPWSB10"},
			HTTPClient:   &http.Client{Transport: &http.Transport{TLSClientConfig: e.EventHubsClientTLS()}},
		})
		if err != nil {
			return nil, err
		}
		return websocket.NetConn(context.WithoutCancel(ctx), c, websocket.MessageBinary), nil
	}
	p, err := azeventhubs.NewProducerClientFromConnectionString(cs, "", &azeventhubs.ProducerClientOptions{NewWebSocketConn: dialWS})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	b, err := p.NewEventDataBatch(ctxT(t), &azeventhubs.EventDataBatchOptions{PartitionID: to.Ptr("1")})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.AddEventData(&azeventhubs.EventData{Body: []byte("over websockets")}, nil); err != nil {
		t.Fatal(err)
	}
	if err := p.SendEventDataBatch(ctxT(t), b, nil); err != nil {
		t.Fatal(err)
	}
	evs := readPartition(t, ehConsumer(t, e, "logs", "$Default"), "1", azeventhubs.StartPosition{Earliest: to.Ptr(true)}, 1)
	if string(evs[0].Body) != "over websockets" || len(paths) == 0 || paths[0] != "/$servicebus/websocket" {
		t.Fatalf("read %q; dialed paths %v", evs[0].Body, paths)
	}
}

// TestEventHubsReadsMoreThanCredit: a consumer reads more events of one
// partition than its link credit (azeventhubs' default prefetch is 300
// and it never settles events: they are sent pre-settled, as Event Hubs
// sends them, or the client would stop granting credit).
func TestEventHubsReadsMoreThanCredit(t *testing.T) {
	e := startEmu(t, &Options{EventHubs: EventHubsOptions{Entities: []string{"logs"}}})
	p := ehProducer(t, e, "logs")
	const n = 1000
	for sent := 0; sent < n; {
		b, err := p.NewEventDataBatch(ctxT(t), &azeventhubs.EventDataBatchOptions{PartitionID: to.Ptr("2")})
		if err != nil {
			t.Fatal(err)
		}
		for ; sent < n; sent++ {
			if err := b.AddEventData(&azeventhubs.EventData{Body: fmt.Appendf(nil, "%d", sent)}, nil); err != nil {
				break
			}
		}
		if err := p.SendEventDataBatch(ctxT(t), b, nil); err != nil {
			t.Fatal(err)
		}
	}
	evs := readPartition(t, ehConsumer(t, e, "logs", "$Default"), "2", azeventhubs.StartPosition{Earliest: to.Ptr(true)}, n)
	for i, ev := range evs {
		if string(ev.Body) != fmt.Sprint(i) || ev.SequenceNumber != int64(i) {
			t.Fatalf("event %d: body %s, sequence number %d", i, ev.Body, ev.SequenceNumber)
		}
	}
}

// TestEventHubsTwinChangeEvents: with TwinChangeEvents the built-in
// endpoint carries a twin change event for a reported patch of the device
// and a desired change of the operator, in IoT Hub's format; without it,
// only telemetry.
func TestEventHubsTwinChangeEvents(t *testing.T) {
	for _, on := range []bool{true, false} {
		e := startEmu(t, &Options{EventHubs: EventHubsOptions{TwinChangeEvents: on}})
		key, err := e.CreateDevice("eh-twin")
		if err != nil {
			t.Fatal(err)
		}
		d := connectHub(t, e, "eh-twin", key, true)
		if st, _, _ := d.twinRequest("$iothub/twin/PATCH/properties/reported/", []byte(`{"temp":21.5}`)); st != "204" {
			t.Fatalf("reported patch: %s", st)
		}
		if err := e.UpdateProperties(ctxT(t), "eh-twin", "", map[string]any{"target": 30}); err != nil {
			t.Fatal(err)
		}
		d.publish("devices/eh-twin/messages/events/", 1, []byte(`{"t":1}`))
		c := ehConsumer(t, e, e.BuiltinEventHub(), "$Default")
		parts := nonEmptyPartitions(t, c)
		if len(parts) != 1 {
			t.Fatalf("twin change events on %v: events in %d partitions", on, len(parts))
		}
		for id, pp := range parts {
			n := int(pp.LastEnqueuedSequenceNumber - pp.BeginningSequenceNumber + 1)
			if (on && n != 3) || (!on && n != 1) {
				t.Fatalf("twin change events on %v: %d events", on, n)
			}
			evs := readPartition(t, c, id, azeventhubs.StartPosition{Earliest: to.Ptr(true)}, n)
			if !on {
				if evs[0].SystemProperties["iothub-message-source"] != "Telemetry" {
					t.Fatalf("event %v", evs[0].SystemProperties)
				}
				continue
			}
			for i, want := range []string{`{"properties":{"reported":{"$version":2,"temp":21.5}},"version":3}`, `{"properties":{"desired":{"$version":2,"target":30}},"version":4}`} {
				ev := evs[i]
				if string(ev.Body) != want || ev.SystemProperties["iothub-message-source"] != "twinChangeEvents" ||
					ev.SystemProperties["iothub-connection-device-id"] != "eh-twin" || ev.Properties["opType"] != "updateTwin" ||
					ev.Properties["iothub-message-schema"] != "twinChangeNotification" || ev.Properties["deviceId"] != "eh-twin" ||
					ev.Properties["hubName"] != e.BuiltinEventHub() || ev.Properties["operationTimestamp"] == nil {
					t.Fatalf("twin change event %d: %s %v %v, want body %s", i, ev.Body, ev.Properties, ev.SystemProperties, want)
				}
			}
			if evs[2].SystemProperties["iothub-message-source"] != "Telemetry" {
				t.Fatalf("third event %v", evs[2].SystemProperties)
			}
		}
	}
}

// TestEventHubsLifecycleEvents: with LifecycleEvents, creating and
// deleting a device put IoT Hub's device lifecycle events, with the twin
// in the body, on the built-in endpoint.
func TestEventHubsLifecycleEvents(t *testing.T) {
	e := startEmu(t, &Options{EventHubs: EventHubsOptions{LifecycleEvents: true}})
	if _, err := e.CreateDevice("eh-life"); err != nil {
		t.Fatal(err)
	}
	if err := e.DeleteDevice("eh-life"); err != nil {
		t.Fatal(err)
	}
	c := ehConsumer(t, e, e.BuiltinEventHub(), "$Default")
	parts := nonEmptyPartitions(t, c)
	if len(parts) != 1 {
		t.Fatalf("events in %d partitions", len(parts))
	}
	for id := range parts {
		evs := readPartition(t, c, id, azeventhubs.StartPosition{Earliest: to.Ptr(true)}, 2)
		for i, op := range []string{"createDeviceIdentity", "deleteDeviceIdentity"} {
			ev := evs[i]
			var body struct {
				DeviceID   string                    `json:"deviceId"`
				Properties map[string]map[string]any `json:"properties"`
			}
			if err := json.Unmarshal(ev.Body, &body); err != nil || body.DeviceID != "eh-life" || body.Properties["desired"] == nil || body.Properties["reported"] == nil ||
				ev.Properties["opType"] != op || ev.Properties["iothub-message-schema"] != "deviceLifecycleNotification" ||
				ev.SystemProperties["iothub-message-source"] != "deviceLifecycleEvents" || ev.SystemProperties["iothub-connection-device-id"] != "eh-life" {
				t.Fatalf("lifecycle event %d: %s %v %v (%v)", i, ev.Body, ev.Properties, ev.SystemProperties, err)
			}
		}
	}
}

// TestEventHubsTokenExpiry: a receiver whose only token expires is
// detached (amqp:unauthorized-access), as IoT Hub detaches device links;
// a token that covers it still lets the other receiver read on.
func TestEventHubsTokenExpiry(t *testing.T) {
	e := startEmu(t, &Options{EventHubs: EventHubsOptions{Entities: []string{"logs"}}})
	endpoint := e.EventHubsEndpoint()
	resource := endpoint + "logs"
	expiry := time.Now().Add(2 * time.Second)
	sr := url.QueryEscape(resource)
	se := strconv.FormatInt(expiry.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(e.eh.NamespaceKey()))
	mac.Write([]byte(sr + "\n" + se))
	sig := url.QueryEscape(base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	short := "Endpoint=" + endpoint + ";SharedAccessSignature=SharedAccessSignature sr=" + sr + "&sig=" + sig + "&se=" + se + "&skn=RootManageSharedAccessKey;EntityPath=logs"

	c, err := azeventhubs.NewConsumerClientFromConnectionString(short, "", "$Default", &azeventhubs.ConsumerClientOptions{
		TLSConfig: ehTLS(e), RetryOptions: azeventhubs.RetryOptions{MaxRetries: -1}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	pc, err := c.NewPartitionClient("0", &azeventhubs.PartitionClientOptions{StartPosition: azeventhubs.StartPosition{Earliest: to.Ptr(true)}})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close(context.Background())
	long := ehConsumer(t, e, "logs", "$Default")
	p := ehProducer(t, e, "logs")
	send := func(body string) {
		b, err := p.NewEventDataBatch(ctxT(t), &azeventhubs.EventDataBatchOptions{PartitionID: to.Ptr("0")})
		if err != nil {
			t.Fatal(err)
		}
		_ = b.AddEventData(&azeventhubs.EventData{Body: []byte(body)}, nil)
		if err := p.SendEventDataBatch(ctxT(t), b, nil); err != nil {
			t.Fatal(err)
		}
	}
	send("before")
	if evs, err := pc.ReceiveEvents(ctxT(t), 1, nil); err != nil || string(evs[0].Body) != "before" {
		t.Fatalf("with a valid token: %v, %v", evs, err)
	}
	// Past the expiry the link is detached; the client's recovery puts the
	// expired token again and is refused.
	var rerr error
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		_, rerr = pc.ReceiveEvents(ctx, 1, nil)
		cancel()
		if rerr != nil && !errors.Is(rerr, context.DeadlineExceeded) {
			break
		}
	}
	if rerr == nil || errors.Is(rerr, context.DeadlineExceeded) || !strings.Contains(strings.ToLower(rerr.Error()), "unauthorized") && !strings.Contains(rerr.Error(), "401") && !strings.Contains(rerr.Error(), "expired") {
		t.Fatalf("after the token expired: %v, want an unauthorized error", rerr)
	}
	send("after")
	if evs := readPartition(t, long, "0", azeventhubs.StartPosition{Earliest: to.Ptr(true)}, 2); string(evs[1].Body) != "after" {
		t.Fatalf("the renewing client read %q", evs[1].Body)
	}
}
