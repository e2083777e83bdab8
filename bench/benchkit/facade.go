package benchkit

import (
	"context"

	"github.com/iotc-go/iotc"
)

// FacadePath sends through the whole SDK, as a user does: an iotc.Client
// (facade, app and adapter) connected with a connection string (so DPS is
// skipped) over the given transport, SendTelemetry of the BodySize body.
func FacadePath(name string, transport iotc.Transport, port int) Path {
	return Path{Name: name, Connect: func(ctx context.Context, t Target) (Conn, error) {
		c, err := iotc.New(iotc.Config{
			DeviceID:   t.DeviceID,
			Credential: iotc.ConnectionString("HostName=" + t.HubHost + ";DeviceId=" + t.DeviceID + ";SharedAccessKey=" + t.Key),
			Transport:  transport,
			Port:       port,
			RootCAs:    t.RootCAs,
		})
		if err != nil {
			return Conn{}, err
		}
		if err := c.Connect(ctx, nil); err != nil {
			_ = c.Close(context.Background())
			return Conn{}, err
		}
		body := Body()
		return Conn{
			Send:  func(ctx context.Context) error { return c.SendTelemetry(ctx, body, nil) },
			Close: func() error { return c.Close(context.Background()) },
		}, nil
	}}
}
