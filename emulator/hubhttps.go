package emulator

import (
	"net/http"

	"github.com/iotc-go/iotc/emulator/internal/devicehttp"
	"github.com/iotc-go/iotc/emulator/internal/dpsapi"
	"github.com/iotc-go/iotc/emulator/internal/hubapi"
	"github.com/iotc-go/iotc/emulator/internal/netlimit"
)

// hubHTTPS is the hub host's HTTPS API behind the WebSocket listener: the
// device HTTPS API (devicehttp: telemetry, cloud-to-device pull) on its
// paths, else DPS's HTTPS APIs and IoT Hub's service API (hostRoutes).
// Both count failed authentications against the listener's FailLimiter.
func (e *Emulator) hubHTTPS() http.Handler {
	// e.fileUploadRoutes: the device file upload API (fileupload.go)
	// before the service API.
	svc := netlimit.AuthGuard(hostRoutes(dpsapi.New(e.core, e.log.With("component", "dpsapi")),
		e.fileUploadRoutes(hubapi.New(e.core, e.log.With("component", "hubapi")))), e.authFails, e.reporter, netlimit.KindServiceAuth)
	dev := netlimit.AuthGuard(devicehttp.New(e.core, devicehttp.Options{
		LockTimeout: e.cfg.c2dLock, MaxDeliveryCount: e.cfg.c2dDeliveries, Logger: e.log.With("component", "devicehttp"),
	}), e.authFails, e.reporter, netlimit.KindDeviceHTTPAuth)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if devicehttp.Owns(r) {
			dev.ServeHTTP(w, r)
			return
		}
		svc.ServeHTTP(w, r)
	})
}
