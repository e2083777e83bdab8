package amqp_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"testing"

	goamqp "github.com/Azure/go-amqp"

	"github.com/iotc-go/iotc/adapters/amqp"
	"github.com/iotc-go/iotc/bench/benchkit"
	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/internal/contract"
)

// rawSender is the baseline: a bare go-amqp connection authenticated with
// one put-token, sending the same message on one sender link.
func rawSender(b *testing.B, s *contract.Suite, id, key string) (func(context.Context) error, func()) {
	ctx := context.Background()
	conn, err := goamqp.Dial(ctx, "amqps://"+s.E.AMQPAddr(), &goamqp.ConnOptions{
		TLSConfig: &tls.Config{ServerName: s.E.HubHost(), RootCAs: s.E.CAPool(), MinVersion: tls.VersionTLS12},
		HostName:  s.E.HubHost(), SASLType: goamqp.SASLTypeAnonymous(), IdleTimeout: amqp.DefaultIdleTimeout,
	})
	if err != nil {
		b.Fatal(err)
	}
	sess, err := conn.NewSession(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	cs, err := sess.NewSender(ctx, "$cbs", nil)
	if err != nil {
		b.Fatal(err)
	}
	cr, err := sess.NewReceiver(ctx, "$cbs", &goamqp.ReceiverOptions{TargetAddress: "cbs"})
	if err != nil {
		b.Fatal(err)
	}
	if err := cs.Send(ctx, &goamqp.Message{Properties: &goamqp.MessageProperties{MessageID: "1"},
		ApplicationProperties: map[string]any{"operation": "put-token", "type": "servicebus.windows.net:sastoken", "name": domain.HubResource(s.E.HubHost(), id)},
		Value:                 s.HubSAS(b, id, key)}, nil); err != nil {
		b.Fatal(err)
	}
	if _, err := cr.Receive(ctx, nil); err != nil {
		b.Fatal(err)
	}
	snd, err := sess.NewSender(ctx, "/devices/"+id+"/messages/events", nil)
	if err != nil {
		b.Fatal(err)
	}
	body := benchkit.Body()
	ct, ce := domain.DefaultContentType, domain.DefaultContentEncoding
	return func(ctx context.Context) error {
		return snd.Send(ctx, &goamqp.Message{Properties: &goamqp.MessageProperties{ContentType: &ct, ContentEncoding: &ce}, Data: [][]byte{body}}, nil)
	}, func() { _ = conn.Close() }
}

// BenchmarkTelemetry sends 256-byte JSON telemetry, each waiting for its
// accepted disposition, through the adapter and through a bare go-amqp
// sender to the same in-process emulator, 1 and 100 in flight. Compare the
// msgs/s metrics.
func BenchmarkTelemetry(b *testing.B) {
	s := contract.Start(b, newTLS(b))
	for _, inflight := range []int{1, 100} {
		for _, path := range []string{"sdk", "raw"} {
			b.Run(fmt.Sprintf("%s/inflight=%d", path, inflight), func(b *testing.B) {
				ctx := context.Background()
				id, key := s.NewDevice(b)
				var send func(context.Context) error
				var closeFn func()
				if path == "raw" {
					send, closeFn = rawSender(b, s, id, key)
				} else {
					sess, _ := s.Connect(b, ctx, id, key)
					body := benchkit.Body()
					send = func(ctx context.Context) error { return sess.SendTelemetry(ctx, domain.Message{Body: body}) }
					closeFn = func() { _ = sess.Close() }
				}
				defer closeFn()
				b.SetBytes(benchkit.BodySize)
				b.ResetTimer()
				elapsed, err := benchkit.Run(ctx, send, b.N, inflight)
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
			})
		}
	}
}
