package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2"
	"go.uber.org/goleak"

	"github.com/iotc-go/iotc/emulator"
	"github.com/iotc-go/iotc/examples/internal/sampletest"
)

func TestMain(m *testing.M) {
	sampletest.MainOr(m, main) // the test binary is the program when a test runs it so
	// azeventhubs' ConsumerClient.Close leaves its $management token
	// renewer running (v2.0.2): a goroutine of the client.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2/internal.(*Namespace).startNegotiateClaimRenewer.func3"))
}

// TestNoSetUp: with no samples.ini the sample runs against the embedded
// emulator's "logs" event hub, forwards the device's records and reads
// them back, and exits 0.
func TestNoSetUp(t *testing.T) {
	code, stdout, stderr := sampletest.RunMain(t, "-config", filepath.Join(t.TempDir(), "none.ini"), "-count", "1", "-interval", "10ms")
	if code != 0 || !strings.Contains(stdout, "dropped 0, failed 0") || !strings.Contains(stdout, `records from event hub "logs" with a ConsumerClient`) {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}

// TestUnreachableHubFails: when the event hub cannot be reached the
// records are retried, counted as failed, and the exit status is 1 (the
// sample used to print "forwarded 0 records, dropped 0" and exit 0).
func TestUnreachableHubFails(t *testing.T) {
	emu := sampletest.StartEmulator(t)
	dir := t.TempDir()
	ini := sampletest.WriteINI(t, emu, dir, "DEVICE_A", "DeviceId = sample-eventhub-down\nGroupKey = "+emu.GroupKey())
	appendINI(t, ini, "\n[EventHub]\nConnectionString = Endpoint=sb://127.0.0.1:1/;SharedAccessKeyName=send;SharedAccessKey=c2VuZA==;EntityPath=device-logs\nRetries = 1\n")
	code, stdout, stderr := sampletest.RunMain(t, "-config", ini, "-count", "1", "-interval", "10ms")
	if code != 1 || strings.Contains(stdout, "failed 0") || !strings.Contains(stdout, "forwarded 0 records") ||
		!strings.Contains(stderr, "records lost") || !strings.Contains(stderr, "not forwarded after 2 attempts") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if strings.Contains(stdout+stderr, "c2VuZA==") {
		t.Error("the key was printed")
	}
}

// TestGivenConnectionString: [EventHub] names an event hub of another
// emulator (with its CA); the records arrive there, as JSON, without keys.
func TestGivenConnectionString(t *testing.T) {
	hubEmu, err := emulator.Start(context.Background(), &emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-", EventHubs: emulator.EventHubsOptions{Entities: []string{"device-logs"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer hubEmu.Close()
	cs, _ := hubEmu.EventHubsConnectionString("device-logs")
	emu := sampletest.StartEmulator(t)
	dir := t.TempDir()
	ini := sampletest.WriteINI(t, emu, dir, "DEVICE_A", "DeviceId = sample-eventhub\nGroupKey = "+emu.GroupKey())
	if err := os.WriteFile(filepath.Join(dir, "hub-ca.pem"), hubEmu.CACertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	appendINI(t, ini, "\n[EventHub]\nConnectionString = "+cs+"\nCAFile = hub-ca.pem\n")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out sampletest.Buffer
	if err := run(ctx, []string{"-config", ini, "-count", "1", "-interval", "10ms", "-v"}, &out, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "dropped 0, failed 0") {
		t.Fatalf("output: %s", out.String())
	}
	c, err := azeventhubs.NewConsumerClientFromConnectionString(cs, "", "$Default", &azeventhubs.ConsumerClientOptions{TLSConfig: hubEmu.EventHubsClientTLS()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var records []map[string]any
	for _, id := range []string{"0", "1", "2", "3"} {
		pp, err := c.GetPartitionProperties(ctx, id, nil)
		if err != nil {
			t.Fatal(err)
		}
		if pp.IsEmpty {
			continue
		}
		pc, _ := c.NewPartitionClient(id, &azeventhubs.PartitionClientOptions{StartPosition: azeventhubs.StartPosition{Earliest: ptr(true)}})
		n := int(pp.LastEnqueuedSequenceNumber - pp.BeginningSequenceNumber + 1)
		for n > 0 {
			evs, err := pc.ReceiveEvents(ctx, n, nil)
			if err != nil {
				t.Fatal(err)
			}
			n -= len(evs)
			for _, ev := range evs {
				var r map[string]any
				if err := json.Unmarshal(ev.Body, &r); err != nil {
					t.Fatalf("record is not JSON: %q", ev.Body)
				}
				records = append(records, r)
			}
		}
		_ = pc.Close(ctx)
	}
	saw := false
	for _, r := range records {
		if r["msg"] == "provisioned" && r["device_id"] == "sample-eventhub" {
			saw = true
		}
	}
	if len(records) < 3 || !saw {
		t.Errorf("%d records read back, provisioned line %v", len(records), saw)
	}
	b, _ := json.Marshal(records)
	if strings.Contains(string(b), emu.GroupKey()) || strings.Contains(out.String(), hubEmu.GroupKey()) {
		t.Error("a key was forwarded or printed")
	}
}

func appendINI(t *testing.T, ini, text string) {
	t.Helper()
	f, err := os.OpenFile(ini, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
}
