package amqphub

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/iotc-go/iotc/emulator/internal/amqp1"
)

// fileNotificationContentType is the content type of a file upload
// notification message.
const fileNotificationContentType = "application/vnd.microsoft.iothub.filenotification.json"

// retryPause is how long a notification the service released or rejected
// waits before it is offered again.
const retryPause = 500 * time.Millisecond

// fileNotificationLoop sends waiting file upload notifications on l, one
// per message (as IoT Hub does), until the link ends; a notification the
// service does not accept waits again.
func (cs *connState) fileNotificationLoop(l *amqp1.Link) {
	defer cs.wg.Done()
	ctx := l.Context()
	for ctx.Err() == nil {
		n, seq, ok := cs.s.b.TakeFileNotification()
		if !ok {
			select {
			case <-cs.s.b.FileNotificationReady():
			case <-ctx.Done():
			}
			continue
		}
		body, err := json.Marshal(n)
		if err != nil { // strings, a number and times
			cs.log.Error("file notification not encoded", "error", err)
			_ = cs.s.b.SettleFileNotification(seq, false)
			return
		}
		ct := fileNotificationContentType
		m := &amqp.Message{
			Properties: &amqp.MessageProperties{MessageID: newUUID(), ContentType: &ct},
			Data:       [][]byte{body},
		}
		out, err := l.Send(ctx, m)
		_, accepted := out.(*amqp1.Accepted)
		done := err == nil && (accepted || out == nil)
		if serr := cs.s.b.SettleFileNotification(seq, done); serr != nil {
			cs.log.Warn("file notification settlement not stored", "error", serr)
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			cs.log.Info("file notification not delivered", "reason", err.Error())
		}
		if err == nil && !done {
			// Released or rejected by the service: offered again after
			// a pause, not in a tight loop.
			select {
			case <-time.After(retryPause):
			case <-ctx.Done():
			}
		}
	}
}
