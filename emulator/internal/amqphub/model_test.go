package amqphub

import (
	"encoding/pem"
	"testing"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// testModel is the emulator's core, as the front-end sees it, recording
// every device connection it opens.
type testModel struct {
	*core.Core
	connects chan *devConn
}

func (m *testModel) Connect(id string, auth core.HubAuth, l core.Link, modelID string) (*core.Session, core.Link, error) {
	s, prev, err := m.Core.Connect(id, auth, l, modelID)
	if err == nil {
		if dc, ok := l.(*devConn); ok {
			select {
			case m.connects <- dc:
			default:
			}
		}
	}
	return s, prev, err
}

// newTestModel is a core with dev1, dev2 and reg1 (individual enrollments
// with testKey) that approves registrations of its groups.
func newTestModel(t *testing.T) *testModel {
	t.Helper()
	c := core.New(core.Config{IDScope: testScope, HubHost: testHost, AutoApprove: true, RetryAfter: 1})
	t.Cleanup(c.Close)
	for _, id := range []string{"dev1", "dev2", "reg1"} {
		if _, _, err := c.PutDevice(id, core.DeviceSpec{}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.SetDeviceKeys(id, testKey, testKey); err != nil {
			t.Fatal(err)
		}
	}
	return &testModel{Core: c, connects: make(chan *devConn, 16)}
}

// addX509Group trusts the harness CA for X.509 devices and registrations.
func (h *harness) addX509Group(t *testing.T) {
	t.Helper()
	pemCA := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: h.ca.Cert.Raw})
	if _, err := h.m.PutEnrollmentGroup(core.EnrollmentGroup{ID: "x509", Enabled: true, CACertPEM: pemCA}); err != nil {
		t.Fatal(err)
	}
}

// addX509Device provisions id in the X.509 group, as DPS would.
func (h *harness) addX509Device(t *testing.T, id string) {
	t.Helper()
	if r := h.m.Register(core.DPSAuth{RegistrationID: id, GroupID: "x509", X509: true}, []byte(`{"registrationId":"`+id+`"}`)); r.Status != 202 {
		t.Fatalf("register %s: %d %s", id, r.Status, r.Body)
	}
}

// queueC2D queues a cloud-to-device message for the device.
func (h *harness) queueC2D(t *testing.T, id, body string, props map[string]string) {
	t.Helper()
	if err := h.m.SendCloudToDevice(testCtx(t), id, []byte(body), props); err != nil {
		t.Fatal(err)
	}
}

// waitPending waits until the device has at most n cloud-to-device
// messages pending (queued or unsettled).
func (h *harness) waitPending(t *testing.T, id string, n int) {
	t.Helper()
	if err := h.m.WaitPendingC2D(testCtx(t), id, n); err != nil {
		t.Fatalf("%s still has %d messages pending, want %d: %v", id, h.m.PendingC2D(id), n, err)
	}
}

// watchTelemetry returns the device's telemetry as the core stores it.
func (h *harness) watchTelemetry(t *testing.T, id string) <-chan core.Telemetry {
	t.Helper()
	ch, stop := h.m.WatchTelemetry(id)
	t.Cleanup(stop)
	return ch
}

// ended reports whether the device connection's session has ended.
func ended(dc *devConn) bool {
	select {
	case <-dc.gone:
		return true
	default:
		return false
	}
}
