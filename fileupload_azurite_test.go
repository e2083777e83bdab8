package iotc_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/emulator"
)

// azuriteKey is Azurite's well-known development account key (public).
const azuriteKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

// TestUploadFileAzurite uploads through the emulator to Azurite (the npm
// package, pinned in .ci/azurite and installed by .ci/run, which sets
// IOTC_AZURITE to its azurite-blob program): the emulator hands the SAS of
// the account named by StorageConnectionString, Azurite checks it and
// stores the blob, and the bytes read back from Azurite are the ones sent.
// It skips only when IOTC_AZURITE is unset (not in CI); when it is set,
// a missing or broken Azurite fails the test.
func TestUploadFileAzurite(t *testing.T) {
	bin := os.Getenv("IOTC_AZURITE")
	if bin == "" {
		t.Skip("IOTC_AZURITE is unset (.ci/run installs Azurite and sets it)")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("IOTC_AZURITE=%s: %v", bin, err)
	}
	dir := t.TempDir()
	certDir := filepath.Join(dir, "certs")
	// A first start makes the emulator's CA; Azurite serves HTTPS with a
	// certificate of that CA, which devices and the emulator trust.
	first, err := emulator.Start(context.Background(), &emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-", CertDir: certDir})
	if err != nil {
		t.Fatal(err)
	}
	_ = first.Close()
	certFile, keyFile := issueLocalhostCert(t, certDir, dir)
	port := freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(port),
		"--cert", certFile, "--key", keyFile, "--location", filepath.Join(dir, "azurite"), "--skipApiVersionCheck", "--silent")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start Azurite: %v", err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			_ = c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Azurite did not listen on %s within 60 s:\n%s", addr, out.String())
		}
	}
	cs := "DefaultEndpointsProtocol=https;AccountName=devstoreaccount1;AccountKey=" + azuriteKey + ";BlobEndpoint=https://" + addr + "/devstoreaccount1;"
	emu, err := emulator.Start(context.Background(), &emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-", CertDir: certDir, StorageConnectionString: cs, RetryAfter: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	if emu.BlobURL() != "" || emu.StorageConnectionString() != cs {
		t.Fatalf("blob URL %q: the embedded endpoint must be off", emu.BlobURL())
	}
	const id = "azurite-device"
	c := connect(t, uploadConfig(t, emu, id), nil)
	const size = 5<<20 + 3
	res, err := c.UploadFile(testCtx(t), "to-azurite.bin", newPattern(9, size), size, &iotc.UploadOptions{BlockSize: 1 << 20})
	if err != nil {
		t.Fatalf("UploadFile to Azurite: %v\n%s", err, out.String())
	}
	rd, err := azblob.NewClientFromConnectionString(cs, &azblob.ClientOptions{ClientOptions: azcore.ClientOptions{
		Transport: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: emu.CAPool(), MinVersion: tls.VersionTLS12}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	dl, err := rd.DownloadStream(testCtx(t), "fileuploads", res.BlobName, nil)
	if err != nil {
		t.Fatalf("read back from Azurite: %v", err)
	}
	h := sha256.New()
	n, _ := io.Copy(h, dl.Body)
	dl.Body.Close()
	var got [32]byte
	copy(got[:], h.Sum(nil))
	if n != size || got != patternSum(9, size) {
		t.Fatalf("Azurite holds %d bytes that differ from the stream", n)
	}
	if ups := emu.FileUploads(id); len(ups) != 1 || !ups[0].Success || ups[0].Size != size {
		t.Fatalf("hub records %+v (the size comes from Azurite's properties)", ups)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// issueLocalhostCert signs a server certificate for 127.0.0.1 and
// localhost with the emulator's CA in certDir, and writes it and its key.
func issueLocalhostCert(t *testing.T, certDir, outDir string) (string, string) {
	t.Helper()
	caPEM, err := os.ReadFile(filepath.Join(certDir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	caKeyPEM, err := os.ReadFile(filepath.Join(certDir, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cb, _ := pem.Decode(caPEM)
	kb, _ := pem.Decode(caKeyPEM)
	if cb == nil || kb == nil {
		t.Fatal("the emulator's CA files hold no PEM")
	}
	ca, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "azurite"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey.(crypto.Signer))
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(outDir, "azurite.pem"), filepath.Join(outDir, "azurite-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
