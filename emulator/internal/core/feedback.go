package core

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// This file holds the service side of cloud-to-device messages: a send
// with the service's message id and ack request, and the feedback records
// IoT Hub gives the service when the device settles such a message.

// Ack values a service may ask for with a cloud-to-device message
// (application property iothub-ack).
const (
	AckNone     = "none"
	AckPositive = "positive" // feedback when the device completes it
	AckNegative = "negative" // feedback when the device rejects it
	AckFull     = "full"     // both
)

// Feedback status codes (IoT Hub's statusCode).
const (
	FeedbackSuccess  = "Success"
	FeedbackRejected = "Rejected"
	FeedbackExpired  = "Expired"
	// FeedbackDeliveryCountExceeded: the message was dead-lettered after
	// too many deliveries (see ReceiveC2D).
	FeedbackDeliveryCountExceeded = "DeliveryCountExceeded"
)

// MaxFeedback is how many feedback records wait for the service; the
// oldest are dropped beyond it (IoT Hub keeps its feedback queue bounded).
const MaxFeedback = 1000

// metaFeedback is the KindMeta key of the pending feedback records.
const metaFeedback = "feedback"

// FeedbackRecord is one record of IoT Hub's feedback JSON.
type FeedbackRecord struct {
	// OriginalMessageID is the settled message's id.
	OriginalMessageID string `json:"originalMessageId"`
	// Description repeats StatusCode, as IoT Hub's records do.
	Description string `json:"description"`
	// StatusCode is FeedbackSuccess, FeedbackRejected or FeedbackExpired.
	StatusCode string `json:"statusCode"`
	// DeviceGenerationID identifies the device's incarnation (its creation time).
	DeviceGenerationID string `json:"deviceGenerationId"`
	// DeviceID is the device.
	DeviceID string `json:"deviceId"`
	// EnqueuedTimeUTC is when the record was made.
	EnqueuedTimeUTC time.Time `json:"enqueuedTimeUtc"`
}

type feedbackEntry struct {
	Seq      int64          `json:"seq"`
	Record   FeedbackRecord `json:"record"`
	inflight bool
}

type feedbackState struct {
	entries []feedbackEntry
	seq     int64
	wake    chan struct{} // one slot: records were added or released
}

// ServiceC2D is a cloud-to-device message sent by the service.
type ServiceC2D struct {
	// MessageID is the service's message id ("" generates one); the device
	// sees it and the feedback record names it.
	MessageID string
	// Ack asks for feedback: "", AckNone, AckPositive, AckNegative, AckFull.
	Ack string
	// Body is at most MaxC2DBody bytes.
	Body []byte
	// Properties are the application properties.
	Properties map[string]string
	// Expiry, when not zero, is the message's absolute-expiry-time: a
	// message not delivered by then is dropped (feedback Expired for a
	// negative or full ack).
	Expiry time.Time
	// CorrelationID and UserID are the message's correlation-id and
	// user-id, handed to the device as they are ("" when none).
	CorrelationID, UserID string
}

// SendServiceC2D queues a service's cloud-to-device message for device id
// (IoT Hub's per-device limit MaxC2DQueue applies) and returns its id. It
// returns the errors of SendCloudToDevice, ErrInvalid for an unknown ack
// value, and ErrConflict when a message with the same id is queued.
func (c *Core) SendServiceC2D(ctx context.Context, id string, m ServiceC2D) (string, error) {
	ack := strings.ToLower(m.Ack)
	switch ack {
	case "", AckNone:
		ack = ""
	case AckPositive, AckNegative, AckFull:
	default:
		return "", fmt.Errorf("%w: iothub-ack %q is not none, positive, negative or full", ErrInvalid, m.Ack)
	}
	m.Ack = ack
	return c.queueC2D(ctx, id, m)
}

// feedbackLocked adds the record the service asked for when m is settled
// with o, and returns the change that stores the feedback; c.mu held.
func (c *Core) feedbackLocked(d *device, m *c2dMsg, o Outcome) (Change, bool) {
	switch {
	case o == Complete && (m.ack == AckPositive || m.ack == AckFull):
		c.addFeedbackLocked(d, m, FeedbackSuccess)
	case o == Reject && (m.ack == AckNegative || m.ack == AckFull):
		c.addFeedbackLocked(d, m, FeedbackRejected)
	default:
		return Change{}, false
	}
	return c.feedbackChangeLocked(), true
}

// expireLocked drops the device's waiting messages whose expiry has
// passed, with Expired feedback when asked, and returns the changes that
// store it; c.mu held.
func (c *Core) expireLocked(d *device) []Change {
	now := c.now()
	var changes []Change
	fb := false
	d.c2d = slices.DeleteFunc(d.c2d, func(m *c2dMsg) bool {
		if m.on != nil || m.expiry.IsZero() || now.Before(m.expiry) {
			return false
		}
		changes = append(changes, Change{Op: OpDelete, Record: Record{Kind: KindC2D, Device: d.id, Key: m.id}})
		if m.ack == AckNegative || m.ack == AckFull {
			c.addFeedbackLocked(d, m, FeedbackExpired)
			fb = true
		}
		c.log.Info("cloud-to-device message expired", "device_id", d.id, "message_id", m.id)
		return true
	})
	if fb {
		changes = append(changes, c.feedbackChangeLocked())
	}
	return changes
}

// addFeedbackLocked queues a feedback record for m; c.mu held.
func (c *Core) addFeedbackLocked(d *device, m *c2dMsg, status string) {
	f := &c.feedback
	f.seq++
	f.entries = append(f.entries, feedbackEntry{Seq: f.seq, Record: FeedbackRecord{
		OriginalMessageID: m.id, Description: status, StatusCode: status,
		DeviceGenerationID: strconv.FormatInt(d.created.UnixNano(), 10), DeviceID: d.id, EnqueuedTimeUTC: c.now(),
	}})
	if n := len(f.entries) - MaxFeedback; n > 0 {
		f.entries = slices.Delete(f.entries, 0, n)
	}
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

func (c *Core) feedbackChangeLocked() Change {
	return Change{Op: OpPut, Record: Record{Kind: KindMeta, Key: metaFeedback, Doc: mustJSON(c.feedback.entries)}}
}

// restoreFeedback loads the stored feedback records (Load).
func (c *Core) restoreFeedback(doc []byte) error {
	var es []feedbackEntry
	if err := json.Unmarshal(doc, &es); err != nil {
		return err
	}
	c.feedback.entries = es
	for _, e := range es {
		c.feedback.seq = max(c.feedback.seq, e.Seq)
	}
	return nil
}

// FeedbackReady receives a value when feedback records may be waiting.
func (c *Core) FeedbackReady() <-chan struct{} { return c.feedback.wake }

// TakeFeedback hands out up to maxRecords waiting feedback records (oldest
// first) as one batch, marked in flight until SettleFeedback; none when
// nothing waits.
func (c *Core) TakeFeedback(maxRecords int) []FeedbackRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []FeedbackRecord
	for i := range c.feedback.entries {
		e := &c.feedback.entries[i]
		if e.inflight || len(out) >= maxRecords {
			continue
		}
		e.inflight = true
		out = append(out, e.Record)
	}
	return out
}

// SettleFeedback ends a batch of TakeFeedback: done removes its records
// (the service completed the message), else they wait again. It returns
// the store's error.
func (c *Core) SettleFeedback(records []FeedbackRecord, done bool) error {
	ids := map[string]bool{}
	for _, r := range records {
		ids[r.DeviceID+"\x00"+r.OriginalMessageID+"\x00"+r.StatusCode] = true
	}
	c.mu.Lock()
	in := func(e feedbackEntry) bool {
		return e.inflight && ids[e.Record.DeviceID+"\x00"+e.Record.OriginalMessageID+"\x00"+e.Record.StatusCode]
	}
	var staged <-chan error
	if done {
		c.feedback.entries = slices.DeleteFunc(c.feedback.entries, in)
		staged = c.stageLocked(c.feedbackChangeLocked())
	} else {
		for i := range c.feedback.entries {
			if in(c.feedback.entries[i]) {
				c.feedback.entries[i].inflight = false
			}
		}
		select {
		case c.feedback.wake <- struct{}{}:
		default:
		}
	}
	c.mu.Unlock()
	return awaitNow(staged)
}

// PurgeC2D removes every cloud-to-device message queued for the device
// that is not in flight on its connection (IoT Hub's purge) and returns
// how many it removed. It returns ErrNotFound or the store's error.
func (c *Core) PurgeC2D(id string) (int, error) {
	c.mu.Lock()
	d, err := c.lookup(id)
	if err != nil {
		c.mu.Unlock()
		return 0, err
	}
	var changes []Change
	d.c2d = slices.DeleteFunc(d.c2d, func(m *c2dMsg) bool {
		if m.on != nil {
			return false
		}
		changes = append(changes, Change{Op: OpDelete, Record: Record{Kind: KindC2D, Device: id, Key: m.id}})
		return true
	})
	if len(changes) > 0 {
		c.notifyLocked(id)
	}
	staged := c.stageLocked(changes...)
	c.mu.Unlock()
	if err := awaitNow(staged); err != nil {
		return 0, err
	}
	c.log.Info("cloud-to-device queue purged", "device_id", id, "messages", len(changes))
	return len(changes), nil
}
