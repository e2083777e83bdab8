package dashboard

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// sse writes Server-Sent Events.
type sse struct {
	w  http.ResponseWriter
	f  http.Flusher
	rc *http.ResponseController
}

// StreamWriteTimeout bounds each write of a live stream: a stream outlives
// the server's read and write timeouts, but a browser that stops reading
// is dropped after this long.
const StreamWriteTimeout = 30 * time.Second

func startSSE(w http.ResponseWriter) (*sse, bool) {
	f, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return nil, false
	}
	// A live stream lasts as long as the page: it is exempt from the
	// server's request read timeout (which would end its context) and its
	// write timeout, and bounds each write instead. Servers without
	// deadlines (httptest) report ErrNotSupported, which changes nothing.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Now().Add(StreamWriteTimeout))
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	f.Flush()
	return &sse{w: w, f: f, rc: rc}, true
}

// send writes one event whose data is v in JSON; it does not flush.
func (s *sse) send(event string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_ = s.rc.SetWriteDeadline(time.Now().Add(StreamWriteTimeout))
	_, err = fmt.Fprintf(s.w, "event: %s\ndata: %s\n\n", event, b)
	return err
}

type deviceRow struct {
	ID        string `json:"id"`
	ModelID   string `json:"model"`
	Prov      bool   `json:"provisioned"`
	Connected bool   `json:"connected"`
	LastSeen  string `json:"lastSeen"`
	Messages  uint64 `json:"messages"`
}

func toRow(d Device) deviceRow {
	return deviceRow{ID: d.ID, ModelID: d.ModelID, Prov: d.Provisioned, Connected: d.Connected, LastSeen: stamp(d.LastSeen), Messages: d.Messages}
}

// devicesStream sends, at most every StatusInterval, the rows of the
// devices that changed since the last send (new devices included), so the
// devices page patches only those rows whatever the fleet size.
func (h *Handler) devicesStream(w http.ResponseWriter, r *http.Request) {
	// The baseline is taken before the response starts, so that a change
	// made once the client sees the stream open is always sent.
	sent := map[string]deviceRow{}
	for _, d := range h.b.Devices() {
		sent[d.ID] = toRow(d)
	}
	s, ok := startSSE(w)
	if !ok {
		return
	}
	t := time.NewTicker(StatusInterval)
	defer t.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-h.done:
			return
		case <-t.C:
		}
		var changed []deviceRow
		online := 0
		ds := h.b.Devices()
		for _, d := range ds {
			row := toRow(d)
			if d.Connected {
				online++
			}
			if sent[d.ID] != row {
				sent[d.ID] = row
				changed = append(changed, row)
			}
		}
		if len(changed) == 0 {
			continue
		}
		if s.send("devices", map[string]any{"rows": changed, "total": len(ds), "online": online}) != nil {
			return
		}
		s.f.Flush()
	}
}

// deviceStream sends one device's telemetry as it arrives ("telemetry"),
// its connection and twin events ("event"), and its status every
// StatusInterval when it changed ("status").
func (h *Handler) deviceStream(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	d, err := h.b.Device(id)
	if h.notFound(w, err) {
		return
	}
	tel, stopTel := h.b.WatchTelemetry(id)
	defer stopTel()
	evs, stopEvs := h.b.WatchEvents(id)
	defer stopEvs()
	s, ok := startSSE(w)
	if !ok {
		return
	}
	last := toRow(d)
	if s.send("status", last) != nil {
		return
	}
	s.f.Flush()
	t := time.NewTicker(StatusInterval)
	defer t.Stop()
	for {
		var err error
		select {
		case <-r.Context().Done():
			return
		case <-h.done:
			return
		case m := <-tel:
			err = s.send("telemetry", toRaw(m))
		case ev := <-evs:
			err = s.send("event", eventView(ev))
		case <-t.C:
			d, derr := h.b.Device(id)
			if derr != nil {
				return
			}
			if row := toRow(d); row != last {
				last = row
				err = s.send("status", row)
			}
		}
		if err != nil {
			return
		}
		s.f.Flush()
	}
}

type eventJSON struct {
	Time string `json:"t"`
	Kind string `json:"kind"`
	Text string `json:"text"`
}

func eventView(e Event) eventJSON {
	return eventJSON{Time: e.Time.UTC().Format("15:04:05.000"), Kind: e.Kind, Text: eventText(e)}
}

// eventText describes an event for people.
func eventText(e Event) string {
	switch e.Kind {
	case "connected":
		if e.Replaced {
			return "connected over " + e.Protocol + " (replaced the previous connection)"
		}
		return "connected over " + e.Protocol
	case "disconnected":
		return "disconnected (" + e.Protocol + ")"
	case "desired":
		return fmt.Sprintf("desired properties changed (version %d)", e.Version)
	case "reported":
		return fmt.Sprintf("device reported properties (version %d)", e.Version)
	default:
		return e.Kind
	}
}
