package app

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// nullTransport provisions and connects at once, with sessions that do
// nothing: what is left is the client's own footprint.
type nullTransport struct{}

func (nullTransport) Name() string { return "null" }
func (nullTransport) Provision(_ context.Context, r ports.ProvisioningRequest) (domain.Assignment, error) {
	return domain.Assignment{Hub: "hub", DeviceID: r.Registration.RegistrationID}, nil
}
func (nullTransport) Connect(context.Context, ports.HubConnection, ports.EventHandler) (ports.HubSession, error) {
	return &nullSession{done: make(chan struct{})}, nil
}

type nullSession struct{ done chan struct{} }

func (s *nullSession) SendTelemetry(context.Context, domain.Message) error { return nil }
func (s *nullSession) GetTwin(context.Context) ([]byte, error) {
	return []byte(`{"desired":{"$version":1},"reported":{"$version":1}}`), nil
}
func (s *nullSession) PatchReported(context.Context, []byte) (int64, error) { return 2, nil }
func (s *nullSession) Done() <-chan struct{}                                { return s.done }
func (s *nullSession) Err() error                                           { return nil }
func (s *nullSession) RenewToken(context.Context, string) error             { return nil }
func (s *nullSession) Close() error                                         { return nil }

// BenchmarkClientFootprint reports the heap and goroutines one connected,
// idle client adds on top of its transport's session.
func BenchmarkClientFootprint(b *testing.B) {
	const n = 1000
	for range b.N {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		g0 := runtime.NumGoroutine()
		clients := make([]*Client, n)
		for i := range clients {
			c, err := New(Options{DeviceID: "dev", IDScope: "0ne0", Credential: domain.Credential{Kind: domain.KindDeviceKey, Key: groupKey}, Transports: []ports.Transport{nullTransport{}}})
			if err != nil {
				b.Fatal(err)
			}
			if err := c.Connect(context.Background(), nil); err != nil {
				b.Fatal(err)
			}
			clients[i] = c
		}
		for range 50 {
			runtime.Gosched()
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heapB/client")
		b.ReportMetric(float64(runtime.NumGoroutine()-g0)/n, "goroutines/client")
		for _, c := range clients {
			_ = c.Close(context.Background())
		}
	}
}

// BenchmarkSendTelemetry measures the client's own cost per message (the
// session does nothing): allocations and CPU on top of the transport's.
func BenchmarkSendTelemetry(b *testing.B) {
	c, err := New(Options{DeviceID: "dev", IDScope: "0ne0", Credential: domain.Credential{Kind: domain.KindDeviceKey, Key: groupKey}, Transports: []ports.Transport{nullTransport{}}})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close(context.Background())
	if err := c.Connect(context.Background(), nil); err != nil {
		b.Fatal(err)
	}
	body := []byte(`{"temperature":21.5,"humidity":40}`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := c.SendTelemetry(ctx, domain.Message{Body: body}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestNewMessageIDIsAUUIDv4: 8-4-4-4-12 lowercase hex, version 4, variant
// 10, and distinct.
func TestNewMessageIDIsAUUIDv4(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := newMessageID()
		if len(id) != 36 || id[8] != '-' || id[13] != '-' || id[18] != '-' || id[23] != '-' || id[14] != '4' || !strings.ContainsRune("89ab", rune(id[19])) {
			t.Fatalf("message id %q is not a version 4 UUID", id)
		}
		for i, r := range id {
			if i == 8 || i == 13 || i == 18 || i == 23 {
				continue
			}
			if !strings.ContainsRune("0123456789abcdef", r) {
				t.Fatalf("message id %q has %q", id, r)
			}
		}
		if seen[id] {
			t.Fatalf("message id %q twice", id)
		}
		seen[id] = true
	}
}

// The Client struct is most of an idle client's own heap: it must stay
// within the allocator's 1,152-byte size class (the next is 1,280), and a
// queue within 80 bytes (the dispatcher embeds three).
func TestClientStructSize(t *testing.T) {
	if n := unsafe.Sizeof(Client{}); n > 1152 {
		t.Errorf("Client is %d bytes, over the 1,152-byte size class", n)
	}
	if n := unsafe.Sizeof(queue[propEvent]{}); n > 80 {
		t.Errorf("queue is %d bytes, want at most 80", n)
	}
}
