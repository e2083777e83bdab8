// Package devicehttp is IoT Hub's device HTTPS API on the emulator's hub
// host (the WebSocket listener's HTTPS fallback, beside the service API of
// hubapi), so that the official SDK's HTTP transport (azure-iot-device-http)
// works against the emulator unchanged:
//
//   - POST /devices/{id}/messages/events: one device-to-cloud message
//     (application properties in iothub-app-* headers, system properties
//     in iothub-messageid, iothub-correlationid, iothub-contenttype, ...),
//     or a batch (Content-Type application/vnd.microsoft.iothub.json, a
//     JSON array of {"body": base64, "base64Encoded", "properties"}); 204;
//   - GET /devices/{id}/messages/devicebound: the next cloud-to-device
//     message, locked for the device (204 when none; 200 with the body,
//     ETag = lock token, iothub-* headers);
//   - DELETE /devices/{id}/messages/devicebound/{lockToken}: complete
//     (with ?reject: reject); POST .../{lockToken}/abandon: abandon; 204.
//
// Every request carries api-version (2016-11-14 to 2021-04-12) and the
// device's credentials (see Authenticate). Twins and direct methods have
// no device HTTPS API on IoT Hub, so none here. Errors have IoT Hub's
// shape: {"Message":"ErrorCode:{code};{text}","ExceptionMessage":"..."} and
// the iothub-errorcode header.
//
// A device that only uses HTTPS holds no connection: the registry shows it
// Disconnected (IoT Hub updates connectionState for MQTT and AMQP only),
// while its lastActivityTime moves with each request.
//
// The package calls the core only; it imports no other front-end.
package devicehttp

import (
	"context"
	"crypto/x509"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// APIVersions are the api-version values accepted: those the official
// device SDKs send over HTTPS (C 2016-11-14 and later, Node 2021-04-12).
var APIVersions = []string{"2016-11-14", "2017-06-30", "2018-06-30", "2019-03-30", "2019-10-01", "2020-03-13", "2020-09-30", "2021-04-12"}

// IoT Hub's limits on device-to-cloud messages over HTTPS.
const (
	// MaxMessage is the largest message, body and properties (names and
	// values) together: 256 KiB; a bigger one gets 413 MessageTooLarge.
	MaxMessage = 256 << 10
	// MaxBatch is the largest batch, every message's body and properties
	// together: 256 KiB.
	MaxBatch = 256 << 10
	// MaxBatchRequest is the largest batch request read (its bodies are
	// base64 in JSON); a bigger request gets 413.
	MaxBatchRequest = 1 << 20
	// MaxBatchMessages is the most messages one batch may hold.
	MaxBatchMessages = 500
)

// BatchContentType is the media type of a batch of messages.
const BatchContentType = "application/vnd.microsoft.iothub.json"

// Options configure New. The zero value is IoT Hub's behaviour.
type Options struct {
	// LockTimeout is how long a received cloud-to-device message stays
	// locked for the device before it becomes visible again. Default
	// core.DefaultC2DLockTimeout (IoT Hub: 1 minute).
	LockTimeout time.Duration
	// MaxDeliveryCount is how many times a message is handed out before
	// it is dead-lettered. Default core.DefaultMaxDeliveryCount (10).
	MaxDeliveryCount int
	// Logger receives one line per refused request (never a header or a
	// token). Default: discard.
	Logger *slog.Logger
}

// Handler serves the device HTTPS API. Create it with New.
type Handler struct {
	core *core.Core
	opts Options
	log  *slog.Logger
}

// New returns the handler over c.
func New(c *core.Core, opts Options) *Handler {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = core.DefaultC2DLockTimeout
	}
	if opts.MaxDeliveryCount <= 0 {
		opts.MaxDeliveryCount = core.DefaultMaxDeliveryCount
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Handler{core: c, opts: opts, log: log}
}

// route is a request's place in the API.
type route struct {
	kind      routeKind
	deviceID  string
	moduleID  string
	lockToken string
}

type routeKind int

const (
	routeNone      routeKind = iota
	routeEvents              // /devices/{id}[/modules/{m}]/messages/events
	routeReceive             // /devices/{id}/messages/devicebound
	routeSettle              // /devices/{id}/messages/devicebound/{lockToken}
	routeAbandon             // /devices/{id}/messages/devicebound/{lockToken}/abandon
	routeBadDevice           // a device or module id that does not unescape
)

// parseRoute places a path (its escaped form, so that an id may hold an
// encoded "/") in the API.
func parseRoute(u *url.URL) route {
	segs := strings.Split(strings.TrimPrefix(u.EscapedPath(), "/"), "/")
	if len(segs) < 4 || segs[0] != "devices" {
		return route{}
	}
	unescape := func(s string) (string, bool) {
		v, err := url.PathUnescape(s)
		return v, err == nil && v != ""
	}
	rt := route{}
	dev, ok := unescape(segs[1])
	rest := segs[2:]
	if len(rest) >= 4 && rest[0] == "modules" && rest[2] == "messages" && rest[3] == "events" && len(rest) == 4 {
		mod, mok := unescape(rest[1])
		if !ok || !mok {
			return route{kind: routeBadDevice}
		}
		return route{kind: routeEvents, deviceID: dev, moduleID: mod}
	}
	if rest[0] != "messages" {
		return route{}
	}
	switch {
	case len(rest) == 2 && rest[1] == "events":
		rt.kind = routeEvents
	case len(rest) == 2 && strings.EqualFold(rest[1], "devicebound"):
		rt.kind = routeReceive
	case len(rest) == 3 && strings.EqualFold(rest[1], "devicebound"):
		rt.kind, rt.lockToken = routeSettle, rest[2]
	case len(rest) == 4 && strings.EqualFold(rest[1], "devicebound") && rest[3] == "abandon":
		rt.kind, rt.lockToken = routeAbandon, rest[2]
	default:
		return route{}
	}
	if !ok {
		return route{kind: routeBadDevice}
	}
	rt.deviceID = dev
	if rt.lockToken != "" {
		tok, err := url.PathUnescape(rt.lockToken)
		if err != nil {
			tok = ""
		}
		rt.lockToken = strings.Trim(tok, `"`)
	}
	return rt
}

// Owns reports whether r's path is one of the device HTTPS API's, for a
// router that sends the hub host's other paths elsewhere (the service API).
func Owns(r *http.Request) bool { return parseRoute(r.URL).kind != routeNone }

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt := parseRoute(r.URL)
	var method string
	switch rt.kind {
	case routeNone:
		h.fail(w, r, http.StatusNotFound, "IotHubNotFound", 404001, r.Method+" "+r.URL.Path+" is not part of IoT Hub's device HTTPS API")
		return
	case routeBadDevice:
		h.fail(w, r, http.StatusBadRequest, "ArgumentInvalid", 400004, "the device or module id in the path is not percent-encoded correctly")
		return
	case routeEvents, routeAbandon:
		method = http.MethodPost
	case routeReceive:
		method = http.MethodGet
	case routeSettle:
		method = http.MethodDelete
	}
	if r.Method != method {
		w.Header().Set("Allow", method)
		h.fail(w, r, http.StatusMethodNotAllowed, "InvalidOperation", 400003, r.Method+" is not allowed on "+r.URL.Path+"; use "+method)
		return
	}
	if v := r.URL.Query().Get("api-version"); !slices.Contains(APIVersions, v) {
		h.fail(w, r, http.StatusBadRequest, "InvalidProtocolVersion", 400001,
			"api-version "+quote(v)+" is not supported; use one of "+strings.Join(APIVersions, ", "))
		return
	}
	id, err := Authenticate(h.core, r, rt.deviceID, rt.moduleID)
	if err != nil {
		h.WriteError(w, r, err)
		return
	}
	if err := h.core.AdmitConnection(id.DeviceID); err != nil {
		h.WriteError(w, r, err)
		return
	}
	switch rt.kind {
	case routeEvents:
		err = h.events(w, r, id)
	case routeReceive:
		err = h.receive(w, r, id)
	case routeSettle:
		o := core.Complete
		if q := r.URL.Query(); q.Has("reject") && !strings.EqualFold(q.Get("reject"), "false") {
			o = core.Reject
		}
		err = h.settle(w, id, rt.lockToken, o)
	case routeAbandon:
		err = h.settle(w, id, rt.lockToken, core.Abandon)
	}
	if err != nil {
		h.WriteError(w, r, err)
	}
}

// peerCerts is the request's TLS client certificate chain.
func peerCerts(r *http.Request) []*x509.Certificate {
	if r.TLS == nil {
		return nil
	}
	return r.TLS.PeerCertificates
}

// admit checks an operation against the fault switches (throttling, quota).
func (h *Handler) admit(ctx context.Context, id Identity, op core.Operation) error {
	return h.core.Admit(ctx, id.DeviceID, op)
}
