package thermostat_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/golang/mock/gomock"
	"go.uber.org/goleak"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/examples/thermostat/thermostat"
	"github.com/iotc-go/iotc/iotctest"
	"github.com/iotc-go/iotc/mocks"
	"github.com/iotc-go/iotc/ports"
)

// These tests need no network at all: .ci/run runs them in a network
// namespace where even loopback is down.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// device connects a thermostat to an in-memory hub.
func device(t *testing.T, hub *iotctest.Hub) (*thermostat.Thermostat, *iotc.Client) {
	t.Helper()
	cfg := hub.Config("thermostat-01")
	cfg.ModelID = thermostat.ModelID
	c, err := iotc.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	th := thermostat.New(20)
	th.Attach(c)
	if err := c.Connect(testCtx(t), nil); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	return th, c
}

func TestTargetTemperatureIsCheckedAndAcknowledged(t *testing.T) {
	hub := iotctest.New()
	th, _ := device(t, hub)
	ctx := testCtx(t)
	ack, err := hub.SetProperty(ctx, "thermostat-01", thermostat.Component, "targetTemperature", 30)
	if err != nil {
		t.Fatal(err)
	}
	if ack.Status != 200 || string(ack.Value) != "30" || th.Target() != 30 {
		t.Errorf("target 30: ack %+v, target %v", ack, th.Target())
	}
	for _, bad := range []any{50, 4.9, "warm"} {
		ack, err := hub.SetProperty(ctx, "thermostat-01", thermostat.Component, "targetTemperature", bad)
		if err != nil {
			t.Fatal(err)
		}
		if ack.Status != 400 || ack.Description == "" {
			t.Errorf("target %v: ack %+v, want 400 with a reason", bad, ack)
		}
	}
	if th.Target() != 30 {
		t.Errorf("a refused target changed the thermostat to %v", th.Target())
	}
	if got := hub.ModelID("thermostat-01"); got != thermostat.ModelID {
		t.Errorf("model %q", got)
	}
}

func TestRunSendsTelemetryAndReportsTheMaximum(t *testing.T) {
	hub := iotctest.New()
	th, c := device(t, hub)
	ctx := testCtx(t)
	if _, err := hub.SetProperty(ctx, "thermostat-01", thermostat.Component, "targetTemperature", 21); err != nil {
		t.Fatal(err)
	}
	if err := th.Run(ctx, c, time.Millisecond, 3); err != nil {
		t.Fatal(err)
	}
	sent := hub.Telemetry("thermostat-01")
	if len(sent) != 3 {
		t.Fatalf("sent %d messages, want 3", len(sent))
	}
	var temps []float64
	for _, m := range sent {
		var body struct{ Temperature float64 }
		if err := m.Unmarshal(&body); err != nil || m.Component != thermostat.Component {
			t.Fatalf("message %+v: %v", m, err)
		}
		temps = append(temps, body.Temperature)
	}
	if temps[0] != 20.5 || temps[1] != 21 || temps[2] != 21 {
		t.Errorf("temperatures %v, want 20.5 21 21 (half a degree a step toward 21)", temps)
	}
	comp, _ := hub.Reported("thermostat-01")[thermostat.Component].(map[string]any)
	if comp["maxTempSinceLastReboot"] != json.Number("21") && comp["maxTempSinceLastReboot"] != 21.0 {
		t.Errorf("reported %v, want maxTempSinceLastReboot 21", comp)
	}
}

func TestGetMaxMinReport(t *testing.T) {
	hub := iotctest.New()
	th, _ := device(t, hub)
	ctx := testCtx(t)
	if _, err := hub.SetProperty(ctx, "thermostat-01", thermostat.Component, "targetTemperature", 22); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		th.Step()
	}
	res, err := hub.InvokeCommand(ctx, "thermostat-01", thermostat.Component, "getMaxMinReport", time.Now().Add(-time.Hour).UTC())
	if err != nil {
		t.Fatal(err)
	}
	var r thermostat.Report
	if err := json.Unmarshal(res.Payload, &r); err != nil || res.Status != 200 {
		t.Fatalf("answer %d %s: %v", res.Status, res.Payload, err)
	}
	if r.MaxTemp != 22 || r.MinTemp != 20 || r.AvgTemp != 21 {
		t.Errorf("report %+v", r)
	}
	res, err = hub.InvokeCommand(ctx, "thermostat-01", thermostat.Component, "getMaxMinReport", "yesterday")
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 400 {
		t.Errorf("a bad payload answered %d, want 400", res.Status)
	}
	res, err = hub.InvokeCommand(ctx, "thermostat-01", "", "getMaxMinReport", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 501 {
		t.Errorf("the command outside its component answered %d, want 501", res.Status)
	}
}

func TestReconnectKeepsTheDeviceWorking(t *testing.T) {
	hub := iotctest.New()
	th, c := device(t, hub)
	ctx := testCtx(t)
	if err := hub.Drop("thermostat-01"); err != nil {
		t.Fatal(err)
	}
	// Sends wait for the reconnect instead of failing.
	if err := th.Run(ctx, c, time.Millisecond, 1); err != nil {
		t.Fatalf("Run across a dropped connection: %v", err)
	}
	if hub.Connects("thermostat-01") < 2 || len(hub.Telemetry("thermostat-01")) != 1 {
		t.Errorf("connects %d, telemetry %d", hub.Connects("thermostat-01"), len(hub.Telemetry("thermostat-01")))
	}
}

// With the gomock mocks when a test must script exact calls: the startup
// twin holds an out-of-range target, and the device must report exactly
// this 400 acknowledgement.
func TestStartupTwinWithMocks(t *testing.T) {
	ctrl := gomock.NewController(t)
	tr := mocks.NewMockTransport(ctrl)
	sess := mocks.NewMockHubSession(ctrl)
	done := make(chan struct{})
	tr.EXPECT().Name().Return("mock").AnyTimes()
	tr.EXPECT().Provision(gomock.Any(), gomock.Any()).Return(domain.Assignment{Hub: "hub.example", DeviceID: "thermostat-01"}, nil)
	tr.EXPECT().Connect(gomock.Any(), gomock.Any(), gomock.Any()).DoAndReturn(
		func(_ context.Context, conn ports.HubConnection, _ ports.EventHandler) (ports.HubSession, error) {
			if conn.ModelID != thermostat.ModelID {
				t.Errorf("model %q", conn.ModelID)
			}
			return sess, nil
		})
	sess.EXPECT().Done().Return(done).AnyTimes()
	sess.EXPECT().Err().Return(nil).AnyTimes()
	sess.EXPECT().GetTwin(gomock.Any()).Return([]byte(`{"desired":{"$version":3,"thermostat1":{"__t":"c","targetTemperature":50}},"reported":{"$version":1}}`), nil)
	reported := make(chan string, 1)
	sess.EXPECT().PatchReported(gomock.Any(), gomock.Any()).DoAndReturn(func(_ context.Context, b []byte) (int64, error) {
		reported <- string(b)
		return 2, nil
	})
	sess.EXPECT().Close().DoAndReturn(func() error { close(done); return nil })

	c, err := iotc.New(iotc.Config{DeviceID: "thermostat-01", IDScope: "0ne00MOCK", Credential: iotc.GroupKey(iotctest.GroupKey), ModelID: thermostat.ModelID, Adapter: tr})
	if err != nil {
		t.Fatal(err)
	}
	thermostat.New(20).Attach(c)
	if err := c.Connect(testCtx(t), nil); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-reported:
		want := `{"thermostat1":{"__t":"c","targetTemperature":{"ac":400,"ad":"targetTemperature must be between 5 and 35","av":3,"value":50}}}`
		if got != want {
			t.Errorf("reported\n%s\nwant\n%s", got, want)
		}
	case <-testCtx(t).Done():
		t.Fatal("no acknowledgement reported")
	}
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}
