package hubapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// zeroTime is how IoT Hub shows a time that never happened.
const zeroTime = "0001-01-01T00:00:00Z"

func unquote(etag string) string { return strings.Trim(etag, `"`) }

func status(enabled bool) string {
	if enabled {
		return "enabled"
	}
	return "disabled"
}

func connState(connected bool) string {
	if connected {
		return "Connected"
	}
	return "Disconnected"
}

func timeOrZero(t time.Time) string {
	if t.IsZero() {
		return zeroTime
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// deviceJSON is a device as IoT Hub's registry returns it.
func deviceJSON(d core.HubDevice) map[string]any {
	auth := map[string]any{
		"type":           d.HubAuthType(),
		"symmetricKey":   map[string]any{"primaryKey": d.PrimaryKey, "secondaryKey": d.SecondaryKey},
		"x509Thumbprint": map[string]any{"primaryThumbprint": nil, "secondaryThumbprint": nil},
	}
	if d.Attestation == core.AttestationX509 {
		auth["symmetricKey"] = map[string]any{"primaryKey": nil, "secondaryKey": nil}
		tp := []any{nil, nil}
		for i, t := range d.Thumbprints {
			tp[i] = t
		}
		auth["x509Thumbprint"] = map[string]any{"primaryThumbprint": tp[0], "secondaryThumbprint": tp[1]}
	}
	var reason any
	if d.StatusReason != "" {
		reason = d.StatusReason
	}
	return map[string]any{
		"deviceId":                   d.ID,
		"generationId":               strconv.FormatInt(d.Created.UnixNano(), 10),
		"etag":                       unquote(d.ETag),
		"connectionState":            connState(d.Connected),
		"status":                     status(d.Enabled),
		"statusReason":               reason,
		"connectionStateUpdatedTime": zeroTime,
		"statusUpdatedTime":          zeroTime,
		"lastActivityTime":           timeOrZero(d.LastActivity),
		"cloudToDeviceMessageCount":  0,
		"authentication":             auth,
		"capabilities":               map[string]any{"iotEdge": d.IotEdge},
		"deviceScope":                d.DeviceScope,
		"parentScopes":               orEmpty(d.ParentScopes),
	}
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// deviceBody is a registry PUT body (the fields the emulator uses).
type deviceBody struct {
	DeviceID       string `json:"deviceId"`
	Status         string `json:"status"`
	StatusReason   string `json:"statusReason"`
	Authentication *struct {
		Type         string `json:"type"`
		SymmetricKey *struct {
			PrimaryKey   string `json:"primaryKey"`
			SecondaryKey string `json:"secondaryKey"`
		} `json:"symmetricKey"`
		X509Thumbprint *struct {
			PrimaryThumbprint   *string `json:"primaryThumbprint"`
			SecondaryThumbprint *string `json:"secondaryThumbprint"`
		} `json:"x509Thumbprint"`
	} `json:"authentication"`
	Capabilities *struct {
		IotEdge bool `json:"iotEdge"`
	} `json:"capabilities"`
	DeviceScope  string   `json:"deviceScope"`
	ParentScopes []string `json:"parentScopes"`
}

func (h *Handler) listDevices(w http.ResponseWriter, r *http.Request) error {
	devs := h.core.HubDevices()
	top := len(devs)
	if s := r.URL.Query().Get("top"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			return fmt.Errorf("%w: top must be 1 to 1000", errBadRequest)
		}
		top = min(top, n)
	}
	out := make([]any, 0, top)
	for _, d := range devs[:top] {
		out = append(out, deviceJSON(d))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (h *Handler) getDevice(w http.ResponseWriter, r *http.Request) error {
	d, err := h.core.HubDevice(r.PathValue("id"))
	if err != nil {
		return err
	}
	w.Header().Set("ETag", d.ETag)
	writeJSON(w, http.StatusOK, deviceJSON(d))
	return nil
}

// putDevice creates the device when the request has no If-Match header
// (409 when it exists), else updates it (404 when it does not exist, 412
// for a stale etag), as IoT Hub does.
func (h *Handler) putDevice(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	var b deviceBody
	if err := readJSON(r, &b); err != nil {
		return err
	}
	if b.DeviceID != "" && b.DeviceID != id {
		return fmt.Errorf("%w: deviceId %q in the body is not %q of the path", errBadRequest, b.DeviceID, id)
	}
	spec, err := specOf(b)
	if err != nil {
		return err
	}
	ifMatch, update := r.Header["If-Match"]
	m := ""
	if update && len(ifMatch) > 0 {
		m = ifMatch[0]
	}
	d, err := h.core.PutHubDevice(id, !update, m, spec)
	if err != nil {
		return err
	}
	w.Header().Set("ETag", d.ETag)
	writeJSON(w, http.StatusOK, deviceJSON(d))
	return nil
}

// specOf checks a device body and returns what the core sets.
func specOf(b deviceBody) (core.HubDeviceSpec, error) {
	var spec core.HubDeviceSpec
	switch strings.ToLower(b.Status) {
	case "":
	case "enabled":
		spec.Enabled = ptr(true)
	case "disabled":
		spec.Enabled = ptr(false)
	default:
		return spec, fmt.Errorf("%w: status %q is neither enabled nor disabled", errBadRequest, b.Status)
	}
	spec.StatusReason = b.StatusReason
	spec.IotEdge = b.Capabilities != nil && b.Capabilities.IotEdge
	spec.DeviceScope, spec.ParentScopes = b.DeviceScope, b.ParentScopes
	if a := b.Authentication; a != nil {
		var tps []string
		if x := a.X509Thumbprint; x != nil {
			for _, t := range []*string{x.PrimaryThumbprint, x.SecondaryThumbprint} {
				if t != nil && *t != "" {
					tps = append(tps, *t)
				}
			}
		}
		switch strings.ToLower(a.Type) {
		case "", "sas":
			if len(tps) > 0 && a.Type != "" {
				return spec, fmt.Errorf("%w: a sas device has no thumbprints", errBadRequest)
			}
		case "selfsigned":
			if len(tps) == 0 {
				return spec, fmt.Errorf("%w: a selfSigned device needs x509Thumbprint.primaryThumbprint", errBadRequest)
			}
		case "certificateauthority":
			if len(tps) > 0 {
				return spec, fmt.Errorf("%w: a certificateAuthority device has no thumbprints", errBadRequest)
			}
			spec.CertificateAuthority = true
			return spec, nil
		default:
			return spec, fmt.Errorf("%w: authentication type %q is not supported by the emulator (sas, selfSigned, certificateAuthority)", errBadRequest, a.Type)
		}
		spec.Thumbprints = tps
		if k := a.SymmetricKey; k != nil && len(tps) == 0 {
			spec.PrimaryKey, spec.SecondaryKey = k.PrimaryKey, k.SecondaryKey
		}
	}
	return spec, nil
}

// MaxBulkDevices is the most devices one bulk registry request may carry
// (IoT Hub: 100).
const MaxBulkDevices = 100

// bulkDevice is one entry of a bulk registry request.
type bulkDevice struct {
	deviceBody
	ID         string `json:"id"`
	ImportMode string `json:"importMode"`
	ETag       string `json:"eTag"` // also read as "etag"
}

// bulkDevices runs a bulk registry request (POST /devices): each entry is
// created, updated or deleted on its own; the answer lists the entries that
// failed, with IoT Hub's error code (200 with isSuccessful false when some did).
func (h *Handler) bulkDevices(w http.ResponseWriter, r *http.Request) error {
	var list []bulkDevice
	if err := readJSON(r, &list); err != nil {
		return err
	}
	if len(list) == 0 || len(list) > MaxBulkDevices {
		return fmt.Errorf("%w: a bulk request holds 1 to %d devices, not %d", errBadRequest, MaxBulkDevices, len(list))
	}
	type bulkError struct {
		DeviceID    string `json:"deviceId"`
		ErrorCode   string `json:"errorCode"`
		ErrorStatus string `json:"errorStatus"`
	}
	errs := []bulkError{}
	for _, d := range list {
		err := h.bulkOne(d)
		if err != nil {
			_, code, _ := errorOf(err)
			errs = append(errs, bulkError{DeviceID: d.ID, ErrorCode: code, ErrorStatus: err.Error()})
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"isSuccessful": len(errs) == 0, "errors": errs, "warnings": []any{}})
	return nil
}

func (h *Handler) bulkOne(d bulkDevice) error {
	etag := strings.Trim(d.ETag, `"`)
	mode := strings.ToLower(d.ImportMode)
	if etag == "" && strings.HasSuffix(mode, "ifmatchetag") {
		return fmt.Errorf("%w: importMode %s needs the device's eTag", errBadRequest, d.ImportMode)
	}
	spec, err := specOf(d.deviceBody)
	if err != nil {
		return err
	}
	switch mode {
	case "create":
		_, err = h.core.PutHubDevice(d.ID, true, "", spec)
	case "update":
		_, err = h.core.PutHubDevice(d.ID, false, "*", spec)
	case "updateifmatchetag":
		_, err = h.core.PutHubDevice(d.ID, false, `"`+etag+`"`, spec)
	case "delete":
		err = h.core.DeleteHubDevice(d.ID, "*")
	case "deleteifmatchetag":
		err = h.core.DeleteHubDevice(d.ID, `"`+etag+`"`)
	default:
		err = fmt.Errorf("%w: importMode %q", errBadRequest, d.ImportMode)
	}
	return err
}

func (h *Handler) deleteDevice(w http.ResponseWriter, r *http.Request) error {
	if err := h.core.DeleteHubDevice(r.PathValue("id"), r.Header.Get("If-Match")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (h *Handler) deviceStats(w http.ResponseWriter, _ *http.Request) error {
	s := h.core.HubStatistics()
	writeJSON(w, http.StatusOK, map[string]any{"totalDeviceCount": s.Total, "enabledDeviceCount": s.Enabled, "disabledDeviceCount": s.Disabled})
	return nil
}

func (h *Handler) serviceStats(w http.ResponseWriter, _ *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]any{"connectedDeviceCount": h.core.HubStatistics().Connected})
	return nil
}

// twinJSON is a twin as IoT Hub's service API and queries return it.
func twinJSON(t core.HubTwin) map[string]any {
	doc := map[string]any{
		"deviceId":                  t.DeviceID,
		"etag":                      unquote(t.ETag),
		"deviceEtag":                unquote(t.DeviceETag),
		"version":                   t.Version,
		"status":                    status(t.Enabled),
		"statusUpdateTime":          zeroTime,
		"connectionState":           connState(t.Connected),
		"lastActivityTime":          timeOrZero(t.LastActivity),
		"cloudToDeviceMessageCount": 0,
		"authenticationType":        t.AuthType,
		"x509Thumbprint":            map[string]any{"primaryThumbprint": nil, "secondaryThumbprint": nil},
		"modelId":                   t.ModelID,
		"tags":                      t.Tags,
		"properties":                map[string]any{"desired": t.Desired, "reported": t.Reported},
	}
	if t.ModuleID != "" {
		doc["moduleId"] = t.ModuleID
		return doc
	}
	doc["capabilities"] = map[string]any{"iotEdge": t.IotEdge}
	if t.DeviceScope != "" {
		doc["deviceScope"] = t.DeviceScope
		doc["parentScopes"] = orEmpty(t.ParentScopes)
	}
	return doc
}

func (h *Handler) getTwin(w http.ResponseWriter, r *http.Request) error {
	t, err := h.core.HubTwin(r.PathValue("id"))
	if err != nil {
		return err
	}
	w.Header().Set("ETag", t.ETag)
	writeJSON(w, http.StatusOK, twinJSON(t))
	return nil
}

// twinBody is a twin PUT or PATCH body; reported properties and the
// read-only fields are ignored.
type twinBody struct {
	DeviceID   string         `json:"deviceId"`
	Tags       map[string]any `json:"tags"`
	Properties *struct {
		Desired map[string]any `json:"desired"`
	} `json:"properties"`
}

func (h *Handler) putTwin(w http.ResponseWriter, r *http.Request) error {
	return h.updateTwin(w, r, true)
}

func (h *Handler) patchTwin(w http.ResponseWriter, r *http.Request) error {
	return h.updateTwin(w, r, false)
}

func (h *Handler) updateTwin(w http.ResponseWriter, r *http.Request, replace bool) error {
	id := r.PathValue("id")
	var b twinBody
	if err := readJSON(r, &b); err != nil {
		return err
	}
	if b.DeviceID != "" && b.DeviceID != id {
		return fmt.Errorf("%w: deviceId %q in the body is not %q of the path", errBadRequest, b.DeviceID, id)
	}
	var desired map[string]any
	if b.Properties != nil {
		desired = b.Properties.Desired
	}
	tags := b.Tags
	if replace {
		if tags == nil {
			tags = map[string]any{}
		}
		if desired == nil {
			desired = map[string]any{}
		}
	}
	t, err := h.core.UpdateHubTwin(r.Context(), id, r.Header.Get("If-Match"), tags, desired, replace)
	if err != nil {
		return err
	}
	w.Header().Set("ETag", t.ETag)
	writeJSON(w, http.StatusOK, twinJSON(t))
	return nil
}

// methodBody is a direct method request.
type methodBody struct {
	MethodName               string          `json:"methodName"`
	Payload                  json.RawMessage `json:"payload"`
	ResponseTimeoutInSeconds *int            `json:"responseTimeoutInSeconds"`
	ConnectTimeoutInSeconds  *int            `json:"connectTimeoutInSeconds"`
}

// Direct method limits (IoT Hub's).
const (
	// MinMethodTimeout and MaxMethodTimeout bound responseTimeoutInSeconds
	// (default DefaultMethodTimeout).
	MinMethodTimeout     = 5
	MaxMethodTimeout     = 300
	DefaultMethodTimeout = 30
	// MaxMethodPayload is the largest request payload (128 KiB).
	MaxMethodPayload = 128 << 10
)

func (h *Handler) invokeMethod(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	var b methodBody
	if err := readJSON(r, &b); err != nil {
		return err
	}
	if b.MethodName == "" {
		return fmt.Errorf("%w: methodName is required", errBadRequest)
	}
	if len(b.Payload) > MaxMethodPayload {
		return fmt.Errorf("%w: payload over %d bytes", core.ErrTooLarge, MaxMethodPayload)
	}
	timeout := DefaultMethodTimeout
	if t := b.ResponseTimeoutInSeconds; t != nil && *t != 0 {
		if *t < MinMethodTimeout || *t > MaxMethodTimeout {
			return fmt.Errorf("%w: responseTimeoutInSeconds %d is not in %d..%d", errBadRequest, *t, MinMethodTimeout, MaxMethodTimeout)
		}
		timeout = *t
	}
	connect := 0
	if t := b.ConnectTimeoutInSeconds; t != nil {
		if *t < 0 || *t > MaxMethodTimeout {
			return fmt.Errorf("%w: connectTimeoutInSeconds %d is not in 0..%d", errBadRequest, *t, MaxMethodTimeout)
		}
		connect = *t
	}
	var payload any = json.RawMessage("null")
	if len(b.Payload) > 0 {
		payload = b.Payload
	}
	res, err := h.core.InvokeCommand(r.Context(), id, "", b.MethodName, payload,
		time.Duration(connect)*time.Second, time.Duration(timeout)*time.Second)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": res.Status, "payload": res.Payload})
	return nil
}

// Query paging limits.
const (
	// DefaultPageSize is the page size without x-ms-max-item-count.
	DefaultPageSize = 100
	// MaxPageSize caps x-ms-max-item-count (IoT Hub: 1000).
	MaxPageSize = 1000
)

func (h *Handler) query(w http.ResponseWriter, r *http.Request) error {
	var b struct {
		Query string `json:"query"`
	}
	if err := readJSON(r, &b); err != nil {
		return err
	}
	q, err := parseQuery(b.Query)
	if err != nil {
		return err
	}
	size := DefaultPageSize
	if s := r.Header.Get("x-ms-max-item-count"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return fmt.Errorf("%w: x-ms-max-item-count %q", errBadRequest, s)
		}
		size = min(n, MaxPageSize)
	}
	start := 0
	if s := r.Header.Get("x-ms-continuation"); s != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(s, "offset:"))
		if err != nil || n < 0 || !strings.HasPrefix(s, "offset:") {
			return fmt.Errorf("%w: x-ms-continuation %q is not one this emulator gave", errBadRequest, s)
		}
		start = n
	}
	twins := h.core.HubTwins()
	if q.modules {
		twins = h.core.HubModuleTwins()
	}
	docs := make([]map[string]any, len(twins))
	for i, t := range twins {
		docs[i] = twinJSON(t)
	}
	if err := r.Context().Err(); err != nil {
		return fmt.Errorf("query: %w", context.Cause(r.Context()))
	}
	rows := q.run(docs)
	start = min(start, len(rows))
	end := min(start+size, len(rows))
	if end < len(rows) {
		w.Header().Set("x-ms-continuation", "offset:"+strconv.Itoa(end))
	}
	itemType := "raw"
	if q.star {
		itemType = "twin"
	}
	w.Header().Set("x-ms-item-type", itemType)
	writeJSON(w, http.StatusOK, slices.Clip(rows[start:end]))
	return nil
}

// purgeCommands removes the device's queued cloud-to-device messages.
func (h *Handler) purgeCommands(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	n, err := h.core.PurgeC2D(id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"deviceId": id, "moduleId": nil, "totalMessagesPurged": n})
	return nil
}

func ptr[T any](v T) *T { return &v }
