package amqp1

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/Azure/go-amqp"
)

func selfSigned(t *testing.T, cn string, ip net.IP) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	if ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, leaf
}

// TestSASLExternalOverTLS takes the client certificate from the *tls.Conn.
func TestSASLExternalOverTLS(t *testing.T) {
	t.Parallel()
	serverCert, serverLeaf := selfSigned(t, "server", net.IPv4(127, 0, 0, 1))
	clientCert, _ := selfSigned(t, "device-x509", nil)
	sink := newSink()
	ts := startServer(t, Config{Handler: sink}, func(nc net.Conn) net.Conn {
		return tls.Server(nc, &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientAuth: tls.RequireAnyClientCert})
	})
	roots := x509.NewCertPool()
	roots.AddCert(serverLeaf)
	c, err := amqp.Dial(testCtx(t), "amqps://"+ts.addr, &amqp.ConnOptions{
		SASLType:  amqp.SASLTypeExternal(""),
		TLSConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{clientCert}, ServerName: "127.0.0.1"},
	})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer c.Close()
	conn := recv(t, sink.opened)
	certs := conn.PeerCertificates()
	if conn.SASLMechanism() != SASLExternal || len(certs) != 1 || certs[0].Subject.CommonName != "device-x509" {
		t.Fatalf("mechanism %q, %d certs", conn.SASLMechanism(), len(certs))
	}
	newSession(t, c)
}
