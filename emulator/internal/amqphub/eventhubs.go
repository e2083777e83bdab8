package amqphub

import (
	"context"

	"github.com/iotc-go/iotc/emulator/internal/amqp1"
)

// EventHubsConn is the Event Hubs-compatible endpoint's side of one AMQP
// connection (emulator/internal/eventhubs.Conn implements it): the
// Server routes to it the CBS put-tokens and the links whose audience or
// address names one of its entities, and serves every other node itself.
type EventHubsConn interface {
	// ClaimsAudience reports whether a put-token's audience is its own.
	ClaimsAudience(audience string) bool
	// ClaimsAddress reports whether a link address is its own.
	ClaimsAddress(address string) bool
	// PutToken checks a claimed put-token; it returns the CBS status and
	// description.
	PutToken(audience, token string) (status int, description string)
	// Attach accepts (nil) or refuses a claimed link.
	Attach(ctx context.Context, l *amqp1.Link) error
	// Message handles a delivery on a link Attach accepted.
	Message(ctx context.Context, l *amqp1.Link, d *amqp1.Delivery) amqp1.Outcome
	// Detach forgets a link Attach accepted.
	Detach(l *amqp1.Link)
	// Close is called once the connection has ended.
	Close()
}

// ehLink reports whether l was accepted by the Event Hubs side.
func (cs *connState) ehLink(l *amqp1.Link) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	_, ok := cs.ehLinks[l]
	return ok
}
