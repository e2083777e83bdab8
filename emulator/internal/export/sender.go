package export

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2"
)

// sendError is a failed delivery, with the code the status shows.
type sendError struct {
	code string
	msg  string
}

func (e *sendError) Error() string { return e.code + ": " + e.msg }

// sender delivers messages to one destination.
type sender interface {
	// send delivers msgs in order (they share a device) and returns how
	// many were delivered before an error.
	send(ctx context.Context, msgs []Message) (int, error)
	// batch is how many messages one send takes at most.
	batch() int
	close()
}

// webhookSender POSTs each message's JSON to the URL with the configured
// query parameters, headers and Authorization.
type webhookSender struct {
	client *http.Client
	url    string
	header http.Header
}

func newWebhookSender(d Destination, client *http.Client) (*webhookSender, error) {
	u, err := url.Parse(d.URL)
	if err != nil {
		return nil, err
	}
	if len(d.QueryCustomizations) > 0 {
		q := u.Query()
		for k, v := range d.QueryCustomizations {
			q.Set(k, v.Value)
		}
		u.RawQuery = q.Encode()
	}
	h := http.Header{}
	for k, v := range d.HeaderCustomizations {
		h.Set(k, v.Value)
	}
	if d.Authorization != nil && d.Authorization.Type == "header" {
		h.Set("Authorization", d.Authorization.Value)
	}
	h.Set("Content-Type", "application/json")
	return &webhookSender{client: client, url: u.String(), header: h}, nil
}

func (s *webhookSender) batch() int { return 1 }
func (s *webhookSender) close()     {}

func (s *webhookSender) send(ctx context.Context, msgs []Message) (int, error) {
	for i, m := range msgs {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(m.Body))
		if err != nil {
			return i, &sendError{"webhookRequestFailed", err.Error()}
		}
		req.Header = s.header.Clone()
		resp, err := s.client.Do(req)
		if err != nil {
			return i, &sendError{"destinationUnreachable", redactURL(err.Error(), s.url)}
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			return i, &sendError{"webhookFailed", fmt.Sprintf("the webhook answered %s", resp.Status)}
		}
	}
	return len(msgs), nil
}

// redactURL keeps query values (which may hold secrets) out of messages.
func redactURL(msg, raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.RawQuery == "" {
		return msg
	}
	clean := *u
	clean.RawQuery = "..."
	return strings.ReplaceAll(msg, raw, clean.String())
}

// eventHubsSender sends batches through the official producer client.
type eventHubsSender struct {
	p *azeventhubs.ProducerClient
}

func newEventHubsSender(d Destination, tlsConfig *tls.Config) (*eventHubsSender, error) {
	if tlsConfig != nil && tlsConfig.ServerName == "" {
		// The certificate names the namespace host, never "host:port"
		// (which go-amqp would check when the Endpoint holds a port).
		if c, err := parseEventHubsConnectionString(d.Authorization.ConnectionString); err == nil {
			if u, err := url.Parse(c.endpoint); err == nil {
				tlsConfig = tlsConfig.Clone()
				tlsConfig.ServerName = u.Hostname()
			}
		}
	}
	p, err := azeventhubs.NewProducerClientFromConnectionString(d.Authorization.ConnectionString, "", &azeventhubs.ProducerClientOptions{
		TLSConfig:    tlsConfig,
		RetryOptions: azeventhubs.RetryOptions{MaxRetries: -1}, // the export retries, with its own status
	})
	if err != nil {
		return nil, &sendError{"invalidConnectionString", "the Event Hubs connection string is not usable"}
	}
	return &eventHubsSender{p: p}, nil
}

func (s *eventHubsSender) batch() int { return 100 }

func (s *eventHubsSender) close() { _ = s.p.Close(context.Background()) }

func (s *eventHubsSender) send(ctx context.Context, msgs []Message) (int, error) {
	var opts *azeventhubs.EventDataBatchOptions
	if key := msgs[0].DeviceID; key != "" {
		opts = &azeventhubs.EventDataBatchOptions{PartitionKey: &key}
	}
	b, err := s.p.NewEventDataBatch(ctx, opts)
	if err != nil {
		return 0, eventHubsError(err)
	}
	ct := "application/json"
	for _, m := range msgs {
		props := make(map[string]any, len(m.Properties))
		for k, v := range m.Properties {
			props[k] = v
		}
		if err := b.AddEventData(&azeventhubs.EventData{Body: m.Body, ContentType: &ct, Properties: props}, nil); err != nil {
			if errors.Is(err, azeventhubs.ErrEventDataTooLarge) && b.NumEvents() > 0 {
				break // the rest goes in the next send
			}
			return 0, &sendError{"messageTooLarge", err.Error()}
		}
	}
	if err := s.p.SendEventDataBatch(ctx, b, nil); err != nil {
		return 0, eventHubsError(err)
	}
	return int(b.NumEvents()), nil
}

func eventHubsError(err error) error {
	var ehErr *azeventhubs.Error
	if errors.As(err, &ehErr) && ehErr.Code != azeventhubs.ErrorCodeConnectionLost {
		return &sendError{"eventHubsError", fmt.Sprintf("Event Hubs refused the messages (%s)", ehErr.Code)}
	}
	return &sendError{"destinationUnreachable", "cannot send to Event Hubs: " + err.Error()}
}
