package domain

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"syscall"
)

// diagnosed is a network error with its class and a text that says what
// to check. Both the class and the original error match errors.Is/As.
type diagnosed struct {
	class error
	text  string
	cause error
}

func (d *diagnosed) Error() string   { return d.text }
func (d *diagnosed) Unwrap() []error { return []error{d.class, d.cause} }

// DiagnoseNetwork returns err, a failed dial or TLS handshake, wrapped with
// the class it belongs to (ErrUntrustedServer, ErrConnectionRefused,
// ErrHostNotFound) and a text that says what happened and what to check,
// once. It returns err unchanged when it is nil, already diagnosed, or of
// none of these classes. The original error stays reachable with
// errors.As (for example *tls.CertificateVerificationError).
func DiagnoseNetwork(err error) error {
	if err == nil {
		return nil
	}
	var d *diagnosed
	if errors.As(err, &d) {
		return err
	}
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		verify   *tls.CertificateVerificationError
		dns      *net.DNSError
	)
	switch {
	case errors.As(err, &unknown):
		return &diagnosed{ErrUntrustedServer, "server certificate not trusted: it is signed by an unknown authority; check RootCAs (for the emulator, its CA file)", err}
	case errors.As(err, &hostname):
		return &diagnosed{ErrUntrustedServer, "server certificate not trusted: it is issued for another host name; check the host name", err}
	case errors.As(err, &invalid):
		return &diagnosed{ErrUntrustedServer, "server certificate not trusted: " + certReason(invalid) + "; check the server's certificate and this machine's clock", err}
	case errors.As(err, &verify):
		return &diagnosed{ErrUntrustedServer, "server certificate not trusted: " + strings.TrimPrefix(verify.Err.Error(), "x509: ") + "; check RootCAs", err}
	case errors.Is(err, syscall.ECONNREFUSED):
		return &diagnosed{ErrConnectionRefused, "connection refused: check the host and port, and that the service is running there", err}
	case errors.As(err, &dns) && dns.IsNotFound:
		return &diagnosed{ErrHostNotFound, "host name not found: check the host name and DNS", err}
	}
	return err
}

// certReason words an x509.CertificateInvalidError without its package
// prefix.
func certReason(e x509.CertificateInvalidError) string {
	switch e.Reason {
	case x509.Expired:
		return "it has expired or is not yet valid"
	case x509.NameMismatch, x509.NameConstraintsWithoutSANs, x509.CANotAuthorizedForThisName:
		return "it is not valid for this host name"
	case x509.IncompatibleUsage:
		return "it is not meant for a TLS server"
	}
	return strings.TrimPrefix(e.Error(), "x509: ")
}
