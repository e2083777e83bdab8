package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/iotc-go/iotc/emulator"
)

// TestProofOfPossessionAcceptedByEmulator: the verification certificate
// iotc-certs makes for the emulator's code proves the CA through the REST
// API (generateVerificationCode, then verify), and the group's
// certificate then reads verified.
func TestProofOfPossessionAcceptedByEmulator(t *testing.T) {
	dir := t.TempDir()
	runOK(t, "ca", "-out", dir)
	emu, err := emulator.Start(context.Background(), &emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "127.0.0.1:0", WebSocketAddr: "-", AMQPAddr: "-"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	rootPEM, err := os.ReadFile(filepath.Join(dir, "root-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := emu.PutEnrollmentGroup(emulator.EnrollmentGroup{ID: "pop", Enabled: true, CACertPEM: rootPEM}); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsTrusting(emu)}}
	call := func(method, path string, body any, out any) int {
		t.Helper()
		var rd *bytes.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		} else {
			rd = bytes.NewReader(nil)
		}
		req, _ := http.NewRequest(method, emu.RESTURL()+path+"?api-version=2022-07-31", rd)
		req.Header.Set("Authorization", emu.APIToken())
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if out != nil {
			_ = json.NewDecoder(resp.Body).Decode(out)
		}
		return resp.StatusCode
	}
	const base = "/api/enrollmentGroups/pop/certificates/primary"
	var code struct{ VerificationCode string }
	if st := call("POST", base+"/generateVerificationCode", nil, &code); st != 200 || code.VerificationCode == "" {
		t.Fatalf("generateVerificationCode: %d %+v", st, code)
	}
	runOK(t, "verify", "-out", dir, "-code", code.VerificationCode)
	ver, err := os.ReadFile(filepath.Join(dir, "verification.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if st := call("POST", base+"/verify", map[string]string{"certificate": string(ver)}, nil); st/100 != 2 {
		t.Fatalf("verify with iotc-certs' certificate: %d", st)
	}
	var got struct{ Verified bool }
	if st := call("GET", base, nil, &got); st != 200 || !got.Verified {
		t.Fatalf("after verify the certificate reads %d %+v, want verified", st, got)
	}
	// The code is single-use, and a certificate for another code is refused.
	if st := call("POST", base+"/verify", map[string]string{"certificate": string(ver)}, nil); st/100 == 2 {
		t.Error("a used verification code was accepted again")
	}
}

func tlsTrusting(e *emulator.Emulator) *tls.Config {
	return &tls.Config{RootCAs: e.CAPool(), MinVersion: tls.VersionTLS12}
}
