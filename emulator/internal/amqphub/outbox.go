package amqphub

import (
	"fmt"
	"sync"

	"github.com/Azure/go-amqp"

	"github.com/iotc-go/iotc/emulator/internal/amqp1"
)

// outbox sends messages on one link where the server is the sender, in
// order, from its own goroutine: amqp1's Link.Send on an unsettled link
// waits for the peer's disposition, which must never hold up the goroutine
// that delivers the peer's requests.
type outbox struct {
	l  *amqp1.Link
	ch chan outItem
}

type outItem struct {
	msg  *amqp.Message
	done func(amqp1.Outcome, error) // may be nil
}

// newOutbox starts the sender goroutine of l (counted in wg); it ends with
// the link.
func newOutbox(l *amqp1.Link, size int, wg *sync.WaitGroup) *outbox {
	o := &outbox{l: l, ch: make(chan outItem, size)}
	wg.Add(1)
	go o.run(wg)
	return o
}

func (o *outbox) run(wg *sync.WaitGroup) {
	defer wg.Done()
	ctx := o.l.Context()
	for {
		select {
		case it := <-o.ch:
			out, err := o.l.Send(ctx, it.msg)
			if it.done != nil {
				it.done(out, err)
			}
		case <-ctx.Done():
			for {
				select {
				case it := <-o.ch:
					if it.done != nil {
						it.done(nil, ErrDeviceGone)
					}
				default:
					return
				}
			}
		}
	}
}

// post queues msg without blocking. done, when not nil, is called with the
// outcome from the outbox goroutine (or with ErrDeviceGone if the link ends
// first). It returns ErrDeviceGone once the link has ended and ErrBusy when
// the queue is full.
func (o *outbox) post(msg *amqp.Message, done func(amqp1.Outcome, error)) error {
	if o.l.Context().Err() != nil {
		return ErrDeviceGone
	}
	select {
	case o.ch <- outItem{msg: msg, done: done}:
		return nil
	default:
		return fmt.Errorf("%w: link %q", ErrBusy, o.l.Name())
	}
}
