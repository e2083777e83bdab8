package amqphub

import (
	"context"
	"crypto/x509"
	"errors"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// Model is what the AMQP front-end needs of the emulator's core: the
// device-side use cases every device front-end calls (authentication,
// DPS, and a core.Session per device connection). *core.Core implements
// it; the core's errors (core.ErrUnauthorized, core.ErrNotFound,
// core.ErrTooLarge, core.ErrThrottled, core.ErrQuotaExceeded,
// core.ErrInvalid, core.ErrStore, ...) are mapped to AMQP conditions once,
// in amqpError.
type Model interface {
	AuthenticateHub(id, token string, certs []*x509.Certificate) (core.HubAuth, error)
	AuthenticateDPS(idScope, regID, token string, certs []*x509.Certificate) (core.DPSAuth, error)
	Connect(id string, auth core.HubAuth, l core.Link, modelID string) (*core.Session, core.Link, error)
	Register(a core.DPSAuth, body []byte) core.DPSResponse
	PollOperation(a core.DPSAuth, operationID string) core.DPSResponse
	// The service side (hub-level CBS, /messages/devicebound, feedback).
	AuthenticateService(token string, need ...core.Rights) (core.ServiceAuth, error)
	SendServiceC2D(ctx context.Context, id string, m core.ServiceC2D) (string, error)
	FeedbackReady() <-chan struct{}
	TakeFeedback(maxRecords int) []core.FeedbackRecord
	SettleFeedback(records []core.FeedbackRecord, done bool) error
	// File upload notifications (/messages/serviceBound/filenotifications).
	FileNotificationReady() <-chan struct{}
	TakeFileNotification() (core.FileNotification, int64, bool)
	SettleFileNotification(seq int64, done bool) error
}

var _ Model = (*core.Core)(nil)

// Errors of a device connection, seen by the core through core.Link.
var (
	// ErrNotSubscribed: the device has not attached the link (methods) or
	// sent the subscription (desired properties) the call needs.
	ErrNotSubscribed = errors.New("amqphub: device is not subscribed")
	// ErrDeviceGone: the device's AMQP session ended (connection closed,
	// token expired, replaced) before or during the call.
	ErrDeviceGone = errors.New("amqphub: device connection ended")
	// ErrBusy: too many messages wait on one link (more than OutboxSize).
	ErrBusy = errors.New("amqphub: link outbox full")
)
