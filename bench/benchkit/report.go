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

// The topics IoT Hub devices subscribe to and publish twin requests on
// (the SDK's adapters/internal/mqttcore has the same; the bench cannot
// import it).
const (
	topicTwinRes = "$iothub/twin/res/#"
	topicDesired = "$iothub/twin/PATCH/properties/desired/#"
	topicMethods = "$iothub/methods/POST/#"
	topicTwinGet = "$iothub/twin/GET/?$rid="
)

// PahoUsername is the CONNECT user name of the raw paho paths: the form
// the SDK sends, "{host}/{id}/?api-version=...&DeviceClientType=...".
func PahoUsername(t Target) string {
	return t.HubHost + "/" + t.DeviceID + "/?api-version=2021-04-12&DeviceClientType=raw-paho"
}

// PahoConn connects a raw paho client built from opts and does what the
// SDK's MQTT session does on Connect plus iotc.Client's initial twin
// sync: a message handler for each of the four filters (installed before
// CONNECT, as the SDK does, so that queued cloud-to-device messages find
// theirs), one SUBSCRIBE to twin responses, desired patches and methods
// at QoS 0 and cloud-to-device messages at QoS 1 (a refused one is an
// error), and a twin GET waiting for its 200. Its sender publishes the
// benchmark body at QoS 1 to t's telemetry topic, computed once.
func PahoConn(ctx context.Context, t Target, opts *paho.ClientOptions) (Conn, error) {
	cl := paho.NewClient(opts)
	twinRes := make(chan string, 1)
	cl.AddRoute(topicTwinRes, func(_ paho.Client, m paho.Message) {
		select {
		case twinRes <- m.Topic():
		default:
		}
	})
	ignore := func(paho.Client, paho.Message) {}
	c2d := "devices/" + t.DeviceID + "/messages/devicebound/#"
	cl.AddRoute(topicDesired, ignore)
	cl.AddRoute(topicMethods, ignore)
	cl.AddRoute(c2d, ignore)
	if err := waitToken(ctx, cl.Connect()); err != nil {
		return Conn{}, err
	}
	fail := func(err error) (Conn, error) { cl.Disconnect(0); return Conn{}, err }
	filters := map[string]byte{topicTwinRes: 0, topicDesired: 0, topicMethods: 0, c2d: 1}
	tok := cl.SubscribeMultiple(filters, nil)
	if err := waitToken(ctx, tok); err != nil {
		return fail(fmt.Errorf("subscribe: %w", err))
	}
	for f, code := range tok.(*paho.SubscribeToken).Result() {
		if code == 0x80 {
			return fail(fmt.Errorf("subscribe: %q refused", f))
		}
	}
	if err := waitToken(ctx, cl.Publish(topicTwinGet+"1", 0, false, []byte(nil))); err != nil {
		return fail(fmt.Errorf("twin get: %w", err))
	}
	select {
	case topic := <-twinRes:
		_, query, _ := strings.Cut(topic, "?")
		if !strings.HasPrefix(topic, "$iothub/twin/res/200/") || !slices.Contains(strings.Split(query, "&"), "$rid=1") {
			return fail(fmt.Errorf("twin get: answered on %q", topic))
		}
	case <-ctx.Done():
		return fail(fmt.Errorf("twin get: %w", ctx.Err()))
	}
	topic := "devices/" + t.DeviceID + "/messages/events/" + domain.Message{}.PropertyBag().Encode()
	body := Body()
	return Conn{
		Send: func(ctx context.Context) error {
			return waitToken(ctx, cl.Publish(topic, 1, false, body))
		},
		Close: func() error { cl.Disconnect(1000); return nil },
	}, nil
}

// waitToken waits for tok or ctx's end.
func waitToken(ctx context.Context, tok paho.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
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
