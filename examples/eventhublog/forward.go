package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// eventHub is a parsed Event Hubs connection string.
type eventHub struct {
	endpoint *url.URL // https://{namespace}.servicebus.windows.net/
	keyName  string
	key      string
	entity   string
}

// String never prints the key.
func (h eventHub) String() string { return h.endpoint.Host + "/" + h.entity }

// parseEventHub reads "Endpoint=sb://ns.servicebus.windows.net/;
// SharedAccessKeyName=...;SharedAccessKey=...[;EntityPath=hub]"; name is
// the event hub when EntityPath is absent. Errors never contain the key.
func parseEventHub(cs, name string) (eventHub, error) {
	var h eventHub
	for _, part := range strings.Split(cs, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch strings.ToLower(k) {
		case "endpoint":
			u, err := url.Parse(v)
			if err != nil || u.Host == "" {
				return h, errors.New("[EventHub] ConnectionString: Endpoint is not sb://host/")
			}
			h.endpoint = &url.URL{Scheme: "https", Host: u.Host, Path: "/"}
		case "sharedaccesskeyname":
			h.keyName = v
		case "sharedaccesskey":
			h.key = v
		case "entitypath":
			h.entity = v
		}
	}
	if h.entity == "" {
		h.entity = name
	}
	if h.endpoint == nil || h.keyName == "" || h.key == "" || h.entity == "" {
		return h, errors.New("[EventHub] needs ConnectionString with Endpoint, SharedAccessKeyName and SharedAccessKey, and EventHubName (or EntityPath)")
	}
	return h, nil
}

// token is the Service Bus SAS token for the event hub, valid ttl. Unlike
// IoT Hub's, the key signs as its UTF-8 text, not base64-decoded.
func (h eventHub) token(now time.Time, ttl time.Duration) string {
	uri := strings.ToLower(h.endpoint.String() + h.entity)
	sr := url.QueryEscape(uri)
	se := strconv.FormatInt(now.Add(ttl).Unix(), 10)
	mac := hmac.New(sha256.New, []byte(h.key))
	mac.Write([]byte(sr + "\n" + se))
	sig := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	return fmt.Sprintf("SharedAccessSignature sr=%s&sig=%s&se=%s&skn=%s", sr, url.QueryEscape(sig), se, url.QueryEscape(h.keyName))
}

// forwarder is an io.Writer for slog.NewJSONHandler: each record (one
// Write) is queued and sent to the event hub in batches of up to
// batchSize records or every flushEvery, whichever comes first. A full
// queue drops records (counted) rather than slowing the device; failed
// posts are reported to errLog, never to the forwarded logger itself.
type forwarder struct {
	hub    eventHub
	client *http.Client
	errLog io.Writer
	ch     chan []byte
	done   chan struct{}
	once   sync.Once

	dropped, sent atomic.Int64
}

const (
	batchSize  = 100
	flushEvery = time.Second
	queueLen   = 1000
)

func newForwarder(h eventHub, client *http.Client, errLog io.Writer) *forwarder {
	f := &forwarder{hub: h, client: client, errLog: errLog, ch: make(chan []byte, queueLen), done: make(chan struct{})}
	go f.loop()
	return f
}

// Write queues one record; it never blocks and never fails.
func (f *forwarder) Write(p []byte) (int, error) {
	select {
	case f.ch <- bytes.TrimSpace(append([]byte(nil), p...)):
	default:
		f.dropped.Add(1)
	}
	return len(p), nil
}

// Close sends what is queued and ends the forwarder; records written
// after Close are dropped. It waits at most until ctx ends.
func (f *forwarder) Close(ctx context.Context) error {
	f.once.Do(func() { close(f.ch) })
	select {
	case <-f.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *forwarder) loop() {
	defer close(f.done)
	var batch [][]byte
	tick := time.NewTicker(flushEvery)
	defer tick.Stop()
	for {
		select {
		case rec, ok := <-f.ch:
			if !ok {
				f.post(batch)
				return
			}
			if batch = append(batch, rec); len(batch) >= batchSize {
				f.post(batch)
				batch = nil
			}
		case <-tick.C:
			f.post(batch)
			batch = nil
		}
	}
}

// post sends a batch with the Event Hubs REST API ("Send batch events").
func (f *forwarder) post(batch [][]byte) {
	if len(batch) == 0 {
		return
	}
	type event struct {
		Body string `json:"Body"`
	}
	events := make([]event, len(batch))
	for i, b := range batch {
		events[i] = event{Body: string(b)}
	}
	body, _ := json.Marshal(events) // strings only: cannot fail
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	u := f.hub.endpoint.JoinPath(f.hub.entity, "messages").String() + "?api-version=2014-01&timeout=60"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		fmt.Fprintln(f.errLog, "eventhublog:", err)
		return
	}
	req.Header.Set("Authorization", f.hub.token(time.Now(), time.Hour))
	req.Header.Set("Content-Type", "application/vnd.microsoft.servicebus.json")
	resp, err := f.client.Do(req)
	if err != nil {
		fmt.Fprintf(f.errLog, "eventhublog: %d records not forwarded: %v\n", len(batch), err)
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		fmt.Fprintf(f.errLog, "eventhublog: %d records refused by %s: %s\n", len(batch), f.hub, resp.Status)
		return
	}
	f.sent.Add(int64(len(batch)))
}
