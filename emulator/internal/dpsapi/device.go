package dpsapi

import (
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// device serves the device registration paths under /{idScope}/registrations/{id}.
func (h *Handler) device(w http.ResponseWriter, r *http.Request, seg []string) error {
	scope, regID := seg[0], seg[2]
	rest := seg[3:]
	var op string
	switch {
	case len(rest) == 1 && rest[0] == "register" && r.Method == http.MethodPut:
		op = "register"
	case len(rest) == 2 && rest[0] == "operations" && rest[1] != "" && r.Method == http.MethodGet:
		op = "poll"
	case len(rest) == 0 && (r.Method == http.MethodPost || r.Method == http.MethodGet):
		op = "status"
	default:
		return fmt.Errorf("%w: %s %s is not a DPS device registration request", errMethod, r.Method, r.URL.Path)
	}
	a, err := h.authenticate(r, scope, regID)
	if err != nil {
		return err
	}
	switch op {
	case "register":
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return fmt.Errorf("read body: %w", err)
		}
		// forceRegistration needs no handling: every register request
		// re-evaluates the registration.
		writeDPS(w, h.core.Register(a, body))
	case "poll":
		writeDPS(w, h.core.PollOperation(a, rest[1]))
	default:
		rs, err := h.core.RegistrationState(regID)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, regStateJSON(rs))
	}
	return nil
}

// authenticate checks the Authorization header's DPS SAS token, or else
// the TLS client certificate.
func (h *Handler) authenticate(r *http.Request, scope, regID string) (core.DPSAuth, error) {
	tok := r.Header.Get("Authorization")
	var certs []*x509.Certificate
	if tok == "" && r.TLS != nil {
		certs = r.TLS.PeerCertificates
	}
	return h.core.AuthenticateDPS(scope, regID, tok, certs)
}

// writeDPS writes a core answer with its retry-after header.
func writeDPS(w http.ResponseWriter, resp core.DPSResponse) {
	if resp.RetryAfter >= 0 {
		w.Header().Set("Retry-After", strconv.Itoa(resp.RetryAfter))
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(resp.Status)
	_, _ = w.Write(resp.Body)
}
