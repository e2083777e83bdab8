package emulator

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/dashboard"
	"github.com/iotc-go/iotc/emulator/internal/netlimit"
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
	dash.SetSessionIdle(e.cfg.limits.DashboardSessionIdle)
	dash.SetStats(func() dashboard.Stats {
		st := e.Stats()
		return dashboard.Stats{Connections: st.Connections, Refusals: st.Refusals, LimitHits: st.LimitHits, MQTTPreLoginBytes: st.MQTTPreLoginBytes}
	})
	mux := http.NewServeMux()
	mux.Handle("/api/", netlimit.AuthGuard(restapi.NewCore(e.core, restapi.Options{
		Token: e.cfg.apiToken, AllowBearer: e.cfg.restBearer, PageSize: e.cfg.restPageSize,
		Logger:     e.log.With("component", "rest"),
		Stats:      func() any { return e.Stats() },
		DataExport: e.dataExportBackend(),
	}), e.authFails, e.reporter, netlimit.KindRESTAuth))
	// The web dashboard; see dashboard.go.
	mux.Handle("/", netlimit.AuthGuard(dash, e.authFails, e.reporter, netlimit.KindDashboardAuth))
	e.restSrv = e.httpServer(mux, e.log.With("component", "rest"))
	e.restURL = "https://" + ln.Addr().String()
	e.restLn = netlimit.NewListener(ln, e.cfg.limits.RESTMaxConns, e.connCapHit("rest"))
	tln := tls.NewListener(e.restLn, cfg)
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		if err := e.restSrv.Serve(tln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.log.Error("REST server stopped", "error", err)
		}
	}()
	return nil
}

// httpServer is an http.Server with the timeouts and header cap of
// Options.Limits. They bound requests only: net/http clears a
// connection's deadlines when it is hijacked (a WebSocket upgrade, whose
// protocol sets its own), and the dashboard's live streams replace them
// with a deadline per write.
func (e *Emulator) httpServer(h http.Handler, log *slog.Logger) *http.Server {
	l := e.cfg.limits
	header := 10 * time.Second // headers come in time even when the request read has no bound
	if l.HTTPReadTimeout > 0 {
		header = min(header, l.HTTPReadTimeout)
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: header,
		ReadTimeout:       l.HTTPReadTimeout,
		WriteTimeout:      l.HTTPWriteTimeout,
		IdleTimeout:       l.HTTPIdleTimeout,
		MaxHeaderBytes:    l.HTTPMaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}
