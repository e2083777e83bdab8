package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/emulator"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func runOK(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if err := run(args, &out, &errb); err != nil {
		t.Fatalf("iotc-certs %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.String()
}

func startEmulator(t *testing.T) *emulator.Emulator {
	t.Helper()
	emu, err := emulator.Start(context.Background(), &emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-", RetryAfter: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	return emu
}

// connectX509 provisions and connects with the certificate, sends one
// message, and returns the hub the device was assigned.
func connectX509(t *testing.T, emu *emulator.Emulator, cred iotc.Credential) {
	t.Helper()
	host, p, _ := net.SplitHostPort(emu.MQTTAddr())
	port, _ := strconv.Atoi(p)
	c, err := iotc.New(iotc.Config{IDScope: emu.IDScope(), Credential: cred, ProvisioningHost: host, Port: port, RootCAs: emu.CAPool()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	defer c.Close(ctx)
	if err := c.Connect(ctx, nil); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	if err := c.SendTelemetry(ctx, map[string]int{"x509": 1}, nil); err != nil {
		t.Fatal(err)
	}
}

// TestCertsAcceptedByEmulator: a root and intermediate CA with encrypted
// keys, a device certificate under the intermediate; the emulator accepts
// the root for an X.509 enrollment group and the device provisions and
// connects over DPS, then straight to the hub with an x509=true
// connection string.
func TestCertsAcceptedByEmulator(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("TEST_CERT_PASS", "pa55 phrase")
	runOK(t, "ca", "-out", dir, "-intermediate", "-passphrase-env", "TEST_CERT_PASS")
	runOK(t, "device", "-out", dir, "-id", "cert-device-1", "-passphrase-env", "TEST_CERT_PASS")
	for _, f := range []string{"root-ca.key", "intermediate-ca.key", "cert-device-1.key"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, st.Mode().Perm())
		}
		b, _ := os.ReadFile(filepath.Join(dir, f))
		if !bytes.Contains(b, []byte("ENCRYPTED PRIVATE KEY")) {
			t.Errorf("%s is not encrypted", f)
		}
	}
	emu := startEmulator(t)
	rootPEM, err := os.ReadFile(filepath.Join(dir, "root-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := emu.PutEnrollmentGroup(emulator.EnrollmentGroup{ID: "x509-certs", Enabled: true, CACertPEM: rootPEM}); err != nil {
		t.Fatalf("PutEnrollmentGroup: %v", err)
	}
	cert, key := filepath.Join(dir, "cert-device-1.pem"), filepath.Join(dir, "cert-device-1.key")
	connectX509(t, emu, iotc.X509Files(cert, key, "pa55 phrase"))

	// Wrong passphrase: a clear configuration error, before any network.
	_, err = iotc.New(iotc.Config{IDScope: emu.IDScope(), Credential: iotc.X509Files(cert, key, "nope")})
	if !errors.Is(err, iotc.ErrInvalidConfig) || !strings.Contains(err.Error(), "passphrase") {
		t.Errorf("wrong passphrase: %v", err)
	}

	// Straight to the hub: HostName=...;DeviceId=...;x509=true.
	_, p, _ := net.SplitHostPort(emu.MQTTAddr())
	port, _ := strconv.Atoi(p)
	cs := "HostName=" + emu.HubHost() + ";DeviceId=cert-device-1;x509=true"
	c, err := iotc.New(iotc.Config{Credential: iotc.X509ConnectionString(cs, iotc.X509Files(cert, key, "pa55 phrase")), Port: port, RootCAs: emu.CAPool()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	defer c.Close(ctx)
	if err := c.Connect(ctx, nil); err != nil {
		t.Fatalf("Connect with an x509 connection string: %v", err)
	}
	if err := c.SendTelemetry(ctx, map[string]int{"direct": 1}, nil); err != nil {
		t.Fatal(err)
	}
}

// TestOpenSSLKeyConnects: a device key encrypted by openssl (PKCS#8,
// -v2 aes-256-cbc, in domain/testdata/pkcs8) decrypts and connects.
func TestOpenSSLKeyConnects(t *testing.T) {
	vec := filepath.Join("..", "..", "domain", "testdata", "pkcs8")
	caPEM, err := os.ReadFile(filepath.Join(vec, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	emu := startEmulator(t)
	if _, err := emu.PutEnrollmentGroup(emulator.EnrollmentGroup{ID: "openssl-ca", Enabled: true, CACertPEM: caPEM}); err != nil {
		t.Fatal(err)
	}
	connectX509(t, emu, iotc.X509Files(filepath.Join(vec, "ec-cert.pem"), filepath.Join(vec, "ec-pkcs8-aes256.key"), "correct horse"))
}

// TestVerificationCertificate: the proof-of-possession certificate has the
// code as CN and is signed by the CA being proved.
func TestVerificationCertificate(t *testing.T) {
	dir := t.TempDir()
	runOK(t, "ca", "-out", dir)
	runOK(t, "verify", "-out", dir, "-code", "3A5E1F00C0FFEE")
	ver := readCert(t, filepath.Join(dir, "verification.pem"))
	root := readCert(t, filepath.Join(dir, "root-ca.pem"))
	if ver.Subject.CommonName != "3A5E1F00C0FFEE" {
		t.Errorf("CN = %q", ver.Subject.CommonName)
	}
	if err := ver.CheckSignatureFrom(root); err != nil {
		t.Errorf("not signed by the root CA: %v", err)
	}
	// A device straight under the root: no chain appended.
	runOK(t, "device", "-out", dir, "-id", "d1")
	b, _ := os.ReadFile(filepath.Join(dir, "d1.pem"))
	if n := bytes.Count(b, []byte("BEGIN CERTIFICATE")); n != 1 {
		t.Errorf("device under the root has %d certificates, want 1", n)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	if _, err := readCert(t, filepath.Join(dir, "d1.pem")).Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("device certificate does not verify: %v", err)
	}
}

// TestOpenSSLReadsEncryptedKey: the keys iotc-certs encrypts are read by
// openssl with the passphrase (and refused without it).
func TestOpenSSLReadsEncryptedKey(t *testing.T) {
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl is needed by this test (CI installs it): %v", err)
	}
	dir := t.TempDir()
	t.Setenv("TEST_CERT_PASS", "s3cret-pass")
	runOK(t, "ca", "-out", dir, "-passphrase-env", "TEST_CERT_PASS")
	key := filepath.Join(dir, "root-ca.key")
	if out, err := exec.Command(bin, "pkey", "-in", key, "-passin", "pass:s3cret-pass", "-noout").CombinedOutput(); err != nil {
		t.Fatalf("openssl pkey: %v\n%s", err, out)
	}
	if err := exec.Command(bin, "pkey", "-in", key, "-passin", "pass:wrong", "-noout").Run(); err == nil {
		t.Error("openssl read the key with a wrong passphrase")
	}
}

func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		nil,
		{"bogus"},
		{"device", "-out", dir, "-id", "x"}, // no CA yet
		{"device", "-out", dir, "-id", "../escape"},                       // bad id
		{"device", "-out", dir},                                           // no id
		{"verify", "-out", dir},                                           // no code
		{"ca", "-out", dir, "-passphrase-env", "IOTC_UNSET_VAR_FOR_TEST"}, // empty passphrase
		{"ca", "-out", dir, "-days", "0"},
	} {
		var out, errb bytes.Buffer
		if err := run(args, &out, &errb); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
	runOK(t, "ca", "-out", dir)
	var out, errb bytes.Buffer
	if err := run([]string{"ca", "-out", dir}, &out, &errb); err == nil || !strings.Contains(err.Error(), "-force") {
		t.Errorf("second ca without -force: %v", err)
	}
	if err := run([]string{"--help"}, &out, &errb); !errors.Is(err, flag.ErrHelp) || !strings.Contains(out.String(), "proof") && !strings.Contains(out.String(), "Prove") {
		t.Errorf("--help: %v", err)
	}
}

func readCert(t *testing.T, f string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", f)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestLiveOpenSSLKeyConnects: the device key re-encrypted by the openssl of
// this machine, in OpenSSL 3's default format (`openssl pkcs8 -topk8 -v2
// aes-256-cbc`) and with `openssl pkey -aes256`, decrypts and connects.
func TestLiveOpenSSLKeyConnects(t *testing.T) {
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl is needed by this test (CI installs it): %v", err)
	}
	dir := t.TempDir()
	runOK(t, "ca", "-out", dir)
	runOK(t, "device", "-out", dir, "-id", "openssl-live")
	emu := startEmulator(t)
	rootPEM, err := os.ReadFile(filepath.Join(dir, "root-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := emu.PutEnrollmentGroup(emulator.EnrollmentGroup{ID: "live", Enabled: true, CACertPEM: rootPEM}); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "openssl-live.key")
	for name, args := range map[string][]string{
		"pkcs8.key": {"pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", plain, "-passout", "pass:live pass"},
		"pkey.key":  {"pkey", "-in", plain, "-aes256", "-passout", "pass:live pass"},
	} {
		out := filepath.Join(dir, name)
		if b, err := exec.Command(bin, append(args, "-out", out)...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, b)
		}
		b, _ := os.ReadFile(out)
		if !bytes.Contains(b, []byte("BEGIN ENCRYPTED PRIVATE KEY")) {
			t.Fatalf("%s: openssl did not write an encrypted PKCS#8 key", name)
		}
		connectX509(t, emu, iotc.X509Files(filepath.Join(dir, "openssl-live.pem"), out, "live pass"))
	}
}
