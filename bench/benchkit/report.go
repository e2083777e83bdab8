package benchkit

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotc-go/iotc/domain"
)

// HubSAS signs a one-hour hub token for t.
func HubSAS(t Target) (string, error) {
	return domain.BuildSAS(t.Key, domain.HubResource(t.HubHost, t.DeviceID), time.Now().Add(time.Hour), "")
}

// PahoConn connects a raw paho client built from opts and publishes the
// benchmark body at QoS 1 to t's telemetry topic, computed once.
func PahoConn(ctx context.Context, t Target, opts *paho.ClientOptions) (Conn, error) {
	cl := paho.NewClient(opts)
	tok := cl.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return Conn{}, ctx.Err()
	}
	if err := tok.Error(); err != nil {
		return Conn{}, err
	}
	topic := "devices/" + t.DeviceID + "/messages/events/" + domain.Message{}.PropertyBag().Encode()
	body := Body()
	return Conn{
		Send: func(ctx context.Context) error {
			tok := cl.Publish(topic, 1, false, body)
			select {
			case <-tok.Done():
				return tok.Error()
			case <-ctx.Done():
				return ctx.Err()
			}
		},
		Close: func() error { cl.Disconnect(1000); return nil },
	}, nil
}

// ParseLevels parses a comma-separated list of positive in-flight levels.
func ParseLevels(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bad -inflight value %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// PortOf returns the port of "host:port".
func PortOf(addr string) (int, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(p)
}

// Median is the median of xs (0 for none).
func Median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// FormatRates prints rates as whole numbers separated by spaces.
func FormatRates(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.FormatFloat(x, 'f', 0, 64)
	}
	return strings.Join(parts, " ")
}
