package iotctest_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/iotctest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func connect(t *testing.T, h *iotctest.Hub, id string, setup func(*iotc.Client)) *iotc.Client {
	t.Helper()
	c, err := iotc.New(h.Config(id))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	if setup != nil {
		setup(c)
	}
	if err := c.Connect(testCtx(t), nil); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	return c
}

func TestCloudToDeviceSettlement(t *testing.T) {
	h := iotctest.New()
	ctx := testCtx(t)
	abandoned := 0
	c := connect(t, h, "dev", func(c *iotc.Client) {
		c.OnCloudMessage(func(_ context.Context, m iotc.CloudMessage) iotc.Outcome {
			switch string(m.Body) {
			case "later":
				abandoned++
				if abandoned == 1 {
					return iotc.Abandon
				}
			case "garbage":
				return iotc.Reject
			}
			return iotc.Complete
		})
	})
	// "later" last: an abandoned message comes again at the next delivery
	// on the connection (as in the emulator), and here at the next one.
	for _, c := range []struct {
		body string
		want iotc.Outcome
	}{{"hello", iotc.Complete}, {"garbage", iotc.Reject}, {"later", iotc.Abandon}} {
		body, want := c.body, c.want
		got, err := h.SendCloudToDevice(ctx, "dev", []byte(body), map[string]string{"k": "v"})
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s settled %v, want %v", body, got, want)
		}
	}
	if n := h.Queued("dev"); n != 1 {
		t.Fatalf("%d messages still queued, want the abandoned one", n)
	}
	// The abandoned message comes again on the next connection.
	if err := h.Drop("dev"); err != nil {
		t.Fatal(err)
	}
	if err := h.WaitConnected(ctx, "dev", 2); err != nil {
		t.Fatal(err)
	}
	if err := c.SendTelemetry(ctx, map[string]int{"x": 1}, nil); err != nil {
		t.Fatal(err)
	}
	for h.Queued("dev") != 0 {
		select {
		case <-ctx.Done():
			t.Fatal("the abandoned message was not completed on the next connection")
		case <-time.After(time.Millisecond):
		}
	}
}

func TestRefuseConnectAndWrongKey(t *testing.T) {
	h := iotctest.New()
	h.RefuseConnect(fmt.Errorf("connack 5: %w", iotc.ErrUnauthorized))
	c, err := iotc.New(h.Config("dev"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if err := c.Connect(testCtx(t), nil); !errors.Is(err, iotc.ErrUnauthorized) {
		t.Fatalf("Connect refused = %v, want ErrUnauthorized", err)
	}
	cfg := h.Config("other")
	cfg.Credential = iotc.GroupKey("d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5")
	c2, err := iotc.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close(context.Background())
	if err := c2.Connect(testCtx(t), nil); !errors.Is(err, iotc.ErrUnauthorized) {
		t.Fatalf("Connect with a wrong key = %v, want ErrUnauthorized", err)
	}
}

func TestDropReconnectsAndResyncs(t *testing.T) {
	h := iotctest.New()
	ctx := testCtx(t)
	got := make(chan iotc.Property, 4)
	connect(t, h, "dev", func(c *iotc.Client) {
		c.OnProperty(func(_ context.Context, p iotc.Property) iotc.PropertyAck { got <- p; return iotc.PropertyAck{} })
	})
	if err := h.Drop("dev"); err != nil {
		t.Fatal(err)
	}
	// Written while the device is away: the next twin read finds it.
	if _, err := h.UpdateProperties("dev", "", map[string]any{"fan": true}); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		if p.Name != "fan" || p.Version != 2 {
			t.Errorf("after the reconnect the handler got %+v", p)
		}
	case <-ctx.Done():
		t.Fatal("the property set while offline never reached the device")
	}
	if ack, ok := h.PropertyAck("dev", "", "fan"); !ok {
		// the ack may still be on its way
		if err := h.WaitReported(ctx, "dev", func(r map[string]any) bool { _, ok := r["fan"]; return ok }); err != nil {
			t.Fatal(err)
		}
	} else if ack.Status != 200 || ack.Version != 2 {
		t.Errorf("ack %+v", ack)
	}
	if h.Connects("dev") < 2 {
		t.Errorf("connects = %d", h.Connects("dev"))
	}
}
