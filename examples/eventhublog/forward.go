package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2"
)

// Forwarding limits.
const (
	maxBatchRecords = 100              // records per batch
	flushEvery      = time.Second      // a partial batch waits at most this long
	queueSize       = 10000            // records waiting; a full queue drops new ones
	sendTimeout     = 30 * time.Second // one send, the client's own retries included
)

// hubTarget is where the records go: an Event Hubs connection string (its
// EntityPath, or entity) and the TLS trust.
type hubTarget struct {
	connectionString string
	entity           string
	rootCAs          *x509.CertPool // nil: the system's
	retries          int            // attempts after the first, per batch
}

// String names the event hub without the key.
func (h hubTarget) String() string {
	host, entity := "", h.entity
	for _, part := range strings.Split(h.connectionString, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch strings.ToLower(k) {
		case "endpoint":
			if u, err := url.Parse(v); err == nil {
				host = u.Host
			}
		case "entitypath":
			if entity == "" {
				entity = v
			}
		}
	}
	return host + "/" + entity
}

// tlsConfig trusts rootCAs and names the endpoint's host without its port
// (go-amqp would otherwise check the certificate against "host:port").
func (h hubTarget) tlsConfig() *tls.Config {
	cfg := &tls.Config{RootCAs: h.rootCAs, MinVersion: tls.VersionTLS12}
	for _, part := range strings.Split(h.connectionString, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		if strings.EqualFold(k, "endpoint") {
			if u, err := url.Parse(v); err == nil {
				host := u.Host
				if hh, _, err := net.SplitHostPort(host); err == nil {
					host = hh
				}
				cfg.ServerName = host
			}
		}
	}
	return cfg
}

// forwarder is an io.Writer for a slog JSON handler: each Write is one
// record, queued and sent in batches with azeventhubs' ProducerClient
// (which batches, retries and authenticates). A batch the client could
// not send is tried again up to retries times; records still not sent
// are counted as failed, records that found the queue full as dropped.
type forwarder struct {
	p       *azeventhubs.ProducerClient
	retries int
	errOut  io.Writer

	mu     sync.Mutex
	closed bool
	q      chan []byte
	done   chan struct{}

	sent, dropped, failed atomic.Int64
	lastErr               atomic.Value // error: the last send failure
}

func newForwarder(h hubTarget, errOut io.Writer) (*forwarder, error) {
	p, err := azeventhubs.NewProducerClientFromConnectionString(h.connectionString, h.entity, &azeventhubs.ProducerClientOptions{
		TLSConfig:    h.tlsConfig(),
		RetryOptions: azeventhubs.RetryOptions{MaxRetries: 2, RetryDelay: 200 * time.Millisecond, MaxRetryDelay: 2 * time.Second},
	})
	if err != nil {
		return nil, fmt.Errorf("[EventHub] ConnectionString: %w", err)
	}
	f := &forwarder{p: p, retries: h.retries, errOut: errOut, q: make(chan []byte, queueSize), done: make(chan struct{})}
	go f.run()
	return f, nil
}

// Write queues one record; it never blocks the device (a full queue, or a
// closed forwarder, counts it as dropped).
func (f *forwarder) Write(b []byte) (int, error) {
	rec := append([]byte(nil), b...)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		f.dropped.Add(1)
		return len(b), nil
	}
	select {
	case f.q <- rec:
	default:
		f.dropped.Add(1)
	}
	return len(b), nil
}

func (f *forwarder) run() {
	defer close(f.done)
	var batch [][]byte
	tick := time.NewTicker(flushEvery)
	defer tick.Stop()
	for {
		select {
		case rec, ok := <-f.q:
			if !ok {
				f.send(batch)
				return
			}
			batch = append(batch, rec)
			if len(batch) >= maxBatchRecords {
				f.send(batch)
				batch = nil
			}
		case <-tick.C:
			f.send(batch)
			batch = nil
		}
	}
}

// send sends records as one or more batches, trying a failed batch again
// up to f.retries times.
func (f *forwarder) send(records [][]byte) {
	for len(records) > 0 {
		n, err := f.sendOnce(records)
		for attempt := 1; err != nil && attempt <= f.retries; attempt++ {
			time.Sleep(time.Duration(attempt) * 200 * time.Millisecond)
			n, err = f.sendOnce(records)
		}
		if err != nil {
			f.failed.Add(int64(len(records)))
			f.lastErr.Store(err)
			fmt.Fprintf(f.errOut, "eventhublog: %d records not forwarded after %d attempts: %v\n", len(records), f.retries+1, err)
			return
		}
		f.sent.Add(int64(n))
		records = records[n:]
	}
}

// sendOnce sends the records that fit one batch; it returns how many.
func (f *forwarder) sendOnce(records [][]byte) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), sendTimeout)
	defer cancel()
	b, err := f.p.NewEventDataBatch(ctx, nil)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range records {
		err := b.AddEventData(&azeventhubs.EventData{Body: r, ContentType: ptr("application/json")}, nil)
		if errors.Is(err, azeventhubs.ErrEventDataTooLarge) {
			if n == 0 { // a record larger than a batch: it can never be sent
				return 0, fmt.Errorf("a record of %d bytes is larger than a batch", len(r))
			}
			break
		}
		if err != nil {
			return 0, err
		}
		n++
	}
	if err := f.p.SendEventDataBatch(ctx, b, nil); err != nil {
		return 0, err
	}
	return n, nil
}

func ptr[T any](v T) *T { return &v }

// Close sends what is queued, then closes the client. It returns an
// error when any record was lost (dropped or failed).
func (f *forwarder) Close(ctx context.Context) error {
	f.mu.Lock()
	if !f.closed {
		f.closed = true
		close(f.q)
	}
	f.mu.Unlock()
	select {
	case <-f.done:
	case <-ctx.Done():
		return fmt.Errorf("records still queued: %w", ctx.Err())
	}
	_ = f.p.Close(ctx)
	if lost := f.dropped.Load() + f.failed.Load(); lost > 0 {
		err := fmt.Errorf("%d records lost (%d dropped at a full queue, %d failed)", lost, f.dropped.Load(), f.failed.Load())
		if last, ok := f.lastErr.Load().(error); ok {
			err = fmt.Errorf("%w; last error: %w", err, last)
		}
		return err
	}
	return nil
}
