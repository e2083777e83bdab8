package devicehttp

import (
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// timeFormat is how times are shown in iothub-enqueuedtime and
// iothub-expiry: UTC, ISO 8601 with milliseconds.
const timeFormat = "2006-01-02T15:04:05.000Z"

// receive hands out the device's next cloud-to-device message, locked for
// Options.LockTimeout: 204 when none waits; 200 with the body, the lock
// token as ETag (quoted) and the message's properties as headers.
func (h *Handler) receive(w http.ResponseWriter, r *http.Request, id Identity) error {
	msg, lock, ok, err := h.core.ReceiveC2D(id.DeviceID, h.opts.LockTimeout, h.opts.MaxDeliveryCount)
	if err != nil {
		return err
	}
	if !ok {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	hd := w.Header()
	hd.Set("ETag", `"`+lock+`"`)
	// Set directly: Header.Set would change the case of the names.
	set := func(k, v string) {
		if v != "" {
			hd[k] = []string{v}
		}
	}
	set("iothub-messageid", msg.MessageID)
	set("iothub-sequencenumber", strconv.FormatInt(msg.SequenceNumber, 10))
	set("iothub-enqueuedtime", formatTime(msg.EnqueuedTime))
	set("iothub-deliverycount", strconv.Itoa(msg.DeliveryCount))
	set("iothub-to", msg.To)
	set("iothub-expiry", formatTime(msg.Expiry))
	set("iothub-correlationid", msg.CorrelationID)
	set("iothub-userid", msg.UserID)
	names := make([]string, 0, len(msg.Properties))
	for k := range msg.Properties {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if !validHeaderName(k) {
			h.log.Info("cloud-to-device property left out of the HTTPS headers: its name is not a header token", "device_id", id.DeviceID, "property", quote(k))
			continue
		}
		hd[appPrefix+k] = []string{msg.Properties[k]}
	}
	hd.Set("Content-Type", "application/octet-stream")
	hd.Set("Content-Length", strconv.Itoa(len(msg.Body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(msg.Body)
	return nil
}

// settle completes, rejects or abandons the message locked under lockToken; 204.
func (h *Handler) settle(w http.ResponseWriter, id Identity, lockToken string, o core.Outcome) error {
	if err := h.core.SettleC2DLock(id.DeviceID, lockToken, o); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(timeFormat)
}

// validHeaderName reports whether s is an HTTP token (RFC 9110), so that
// it can name a header.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c < 0x80 && contains("!#$%&'*+-.^_`|~", c):
		default:
			return false
		}
	}
	return true
}

func contains(set string, c byte) bool {
	for i := 0; i < len(set); i++ {
		if set[i] == c {
			return true
		}
	}
	return false
}
