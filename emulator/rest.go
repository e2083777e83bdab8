package emulator

import (

	// #nosec G505 -- thumbprints are SHA-1 by definition
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/dashboard"
	"github.com/iotc-go/iotc/emulator/internal/restapi"
)

// startREST serves the operator API over HTTPS with the server certificate.
func (e *Emulator) startREST() error {
	ln, err := net.Listen("tcp", e.cfg.restAddr)
	if err != nil {
		return fmt.Errorf("emulator: REST listener: %w", err)
	}
	cfg := e.serverTLS()
	cfg.ClientAuth = tls.NoClientCert
	dash, err := dashboard.New(dashboard.CoreBackend(e.core), e.cfg.apiToken, e.core.Done(), e.log.With("component", "dashboard"))
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("emulator: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/api/", restapi.NewCore(e.core, restapi.Options{
		Token: e.cfg.apiToken, AllowBearer: e.cfg.restBearer, PageSize: e.cfg.restPageSize,
		Logger: e.log.With("component", "rest"),
	}))
	mux.Handle("/", dash) // the web dashboard; see dashboard.go
	e.restSrv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
	}
	e.restURL = "https://" + ln.Addr().String()
	tln := tls.NewListener(ln, cfg)
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		if err := e.restSrv.Serve(tln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.log.Error("REST server stopped", "error", err)
		}
	}()
	return nil
}
