package domain

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestDiagnoseNetwork(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}}
	unknown := &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}
	for _, tc := range []struct {
		name      string
		in        error
		class     error
		retryable bool
		hint      string
	}{
		{"unknown authority", fmt.Errorf("tls handshake: %w", unknown), ErrUntrustedServer, false, "RootCAs"},
		{"name mismatch", &tls.CertificateVerificationError{Err: x509.HostnameError{Host: "h"}}, ErrUntrustedServer, false, "host name"},
		{"expired", x509.CertificateInvalidError{Reason: x509.Expired}, ErrUntrustedServer, false, "clock"},
		{"other verification", &tls.CertificateVerificationError{Err: errors.New("x509: something else")}, ErrUntrustedServer, false, "RootCAs"},
		{"refused", refused, ErrConnectionRefused, true, "port"},
		{"dns", &net.DNSError{Err: "no such host", Name: "h.example", IsNotFound: true}, ErrHostNotFound, true, "host name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := DiagnoseNetwork(tc.in)
			if !errors.Is(got, tc.class) {
				t.Fatalf("DiagnoseNetwork(%v) = %v, want it to match %v", tc.in, got, tc.class)
			}
			if !errors.Is(got, tc.in) {
				t.Errorf("the original error is not kept: %v", got)
			}
			if IsRetryable(got) != tc.retryable {
				t.Errorf("IsRetryable = %v, want %v", !tc.retryable, tc.retryable)
			}
			if !strings.Contains(got.Error(), tc.hint) || strings.Contains(got.Error(), "x509:") {
				t.Errorf("text %q: want it to name %q once and no package prefix", got, tc.hint)
			}
			if again := DiagnoseNetwork(fmt.Errorf("x: %w", got)); again.Error() != "x: "+got.Error() {
				t.Errorf("diagnosing twice changed the text: %q", again)
			}
		})
	}
	for _, in := range []error{nil, errors.New("EOF"), &net.DNSError{Err: "timeout", IsTimeout: true}} {
		if got := DiagnoseNetwork(in); got != in {
			t.Errorf("DiagnoseNetwork(%v) = %v, want it unchanged", in, got)
		}
	}
}

func TestProvisioningErrorText(t *testing.T) {
	refused := &ProvisioningError{Status: ProvisioningStatusRefused, Err: fmt.Errorf("%w (mqtt CONNACK 5)", ErrUnauthorized)}
	if !errors.Is(refused, ErrUnauthorized) || IsRetryable(refused) {
		t.Errorf("a refusal must match ErrUnauthorized and not be retried: %v", refused)
	}
	if got := refused.Error(); !strings.Contains(got, "ID scope") || strings.Count(got, "provision") != 1 || strings.Contains(got, "iotc:") {
		t.Errorf("text %q: want the ID scope named, one 'provision', no prefix", got)
	}
	disabled := &ProvisioningError{Status: DPSDisabled, ErrorCode: 401002}
	if got := disabled.Error(); !strings.Contains(got, "disabled") || !strings.Contains(got, "401002") {
		t.Errorf("text %q", got)
	}
}
