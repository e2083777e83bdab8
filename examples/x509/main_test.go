package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iotc-go/iotc/emulator"
	"github.com/iotc-go/iotc/examples/internal/sampletest"
)

func TestMain(m *testing.M) {
	sampletest.MainOr(m, main) // the test binary is the program when a test runs it so
	goleak.VerifyTestMain(m)
}

// TestExitCodes runs the sample as a program: -h exits 0; a certificate
// file that does not exist exits 1 with a one-line reason.
func TestExitCodes(t *testing.T) {
	if code, _, stderr := sampletest.RunMain(t, "-h"); code != 0 {
		t.Errorf("-h: exit %d\n%s", code, stderr)
	}
	emu := sampletest.StartEmulator(t)
	ini := sampletest.WriteINI(t, emu, t.TempDir(), "DEVICE_A", "DeviceId = x\nCertFilePath = missing.pem\nKeyFilePath = missing.key")
	code, _, stderr := sampletest.RunMain(t, "-config", ini)
	if last := sampletest.LastLine(stderr); code != 1 || !strings.HasPrefix(last, "x509: ") || !strings.Contains(last, "missing.pem") {
		t.Errorf("exit %d, last line %q\n%s", code, last, stderr)
	}
}

// TestX509Sample connects with the certificate and the openssl-encrypted
// PKCS#8 key of domain/testdata/pkcs8 (CN pkcs8-device), DeviceId left
// out, then again straight to the hub with an x509=true connection string.
func TestX509Sample(t *testing.T) {
	vec, err := filepath.Abs(filepath.Join("..", "..", "domain", "testdata", "pkcs8"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(vec, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	emu := sampletest.StartEmulator(t)
	if _, err := emu.PutEnrollmentGroup(emulator.EnrollmentGroup{ID: "x509-sample", Enabled: true, CACertPEM: caPEM}); err != nil {
		t.Fatal(err)
	}
	creds := "CertFilePath = " + filepath.Join(vec, "ec-cert.pem") + "\nKeyFilePath = " + filepath.Join(vec, "ec-pkcs8-aes256.key") + "\nCertPassphrase = correct horse"
	dir := t.TempDir()
	ini := sampletest.WriteINI(t, emu, dir, "DEVICE_X509", creds)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out sampletest.Buffer
	if err := run(ctx, []string{"-config", ini, "-section", "DEVICE_X509", "-count", "1", "-interval", "10ms"}, &out, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "connected as pkcs8-device") {
		t.Errorf("output:\n%s", out.String())
	}
	ini = sampletest.WriteINI(t, emu, dir, "DEVICE_X509", creds+"\nConnectionString = HostName="+emu.HubHost()+";DeviceId=pkcs8-device;x509=true")
	if err := run(ctx, []string{"-config", ini, "-section", "DEVICE_X509", "-count", "1", "-interval", "10ms"}, &out, &out); err != nil {
		t.Fatalf("run with a connection string: %v\n%s", err, out.String())
	}
	msgs, err := emu.TelemetryHistory("pkcs8-device", emulator.TelemetryFilter{})
	if err != nil || len(msgs) != 4 {
		t.Fatalf("telemetry: %d messages, %v; want 4", len(msgs), err)
	}
	bad := sampletest.WriteINI(t, emu, dir, "DEVICE_X509", strings.Replace(creds, "correct horse", "wrong horse", 1))
	if err := run(ctx, []string{"-config", bad, "-section", "DEVICE_X509", "-count", "1"}, &out, &out); err == nil || !strings.Contains(err.Error(), "passphrase") {
		t.Errorf("wrong passphrase: %v", err)
	}
}
