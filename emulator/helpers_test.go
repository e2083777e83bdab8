package emulator

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(kill9ChildEnv); dir != "" {
		runKill9Child(dir) // never returns: the parent kills it
	}
	// azeventhubs' ConsumerClient.Close leaves its $management link's
	// token renewer running (v2.0.2 closes the namespace, not the links):
	// a goroutine of the client, not of the emulator.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2/internal.(*Namespace).startNegotiateClaimRenewer.func3"))
}

// wait bounds every wait of a test: reaching it is a failure, never a
// measurement.
const wait = 10 * time.Second

func startEmu(t *testing.T, opts *Options) *Emulator {
	t.Helper()
	if opts == nil {
		opts = &Options{}
	}
	if opts.MQTTAddr == "" {
		opts.MQTTAddr = "127.0.0.1:0"
	}
	if opts.RESTAddr == "" {
		opts.RESTAddr = "-"
	}
	if opts.CertDir == "" {
		opts.CertDir = t.TempDir()
	}
	e, err := Start(t.Context(), opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return e
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	t.Cleanup(cancel)
	return ctx
}

// client is a paho connection with a mailbox per subscription.
type client struct {
	t    *testing.T
	c    paho.Client
	lost chan error // gets the error when the server drops the connection
}

type dialOpts struct {
	clientID, username, password string
	clean                        bool
	serverName                   string // TLS server name; default "localhost"
	websocket                    bool   // dial MQTT over WebSockets
	cert                         *tls.Certificate
	manualAck                    bool
	onMessage                    paho.MessageHandler // messages matching no subscription of this client
}

func dial(t *testing.T, e *Emulator, o dialOpts) (*client, error) {
	t.Helper()
	if o.serverName == "" {
		o.serverName = "localhost"
	}
	tlsCfg := &tls.Config{RootCAs: e.CAPool(), ServerName: o.serverName, MinVersion: tls.VersionTLS12}
	if o.cert != nil {
		tlsCfg.Certificates = []tls.Certificate{*o.cert}
	}
	cl := &client{t: t, lost: make(chan error, 1)}
	broker := "ssl://" + e.MQTTAddr()
	if o.websocket {
		broker = "wss://" + e.WebSocketAddr() + "/$iothub/websocket"
	}
	opts := paho.NewClientOptions().
		AddBroker(broker).
		SetClientID(o.clientID).
		SetUsername(o.username).
		SetPassword(o.password).
		SetCleanSession(o.clean).
		SetTLSConfig(tlsCfg).
		SetProtocolVersion(4).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetOrderMatters(false).
		SetKeepAlive(60 * time.Second).
		SetConnectTimeout(wait).
		SetAutoAckDisabled(o.manualAck).
		SetDefaultPublishHandler(o.onMessage).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			select {
			case cl.lost <- err:
			default:
			}
		})
	cl.c = paho.NewClient(opts)
	tok := cl.c.Connect()
	if !tok.WaitTimeout(wait) {
		return nil, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, &connectError{code: tok.(*paho.ConnectToken).ReturnCode(), err: err}
	}
	t.Cleanup(cl.close)
	return cl, nil
}

// connectError is a refused CONNECT with its CONNACK return code.
type connectError struct {
	code byte
	err  error
}

func (e *connectError) Error() string { return fmt.Sprintf("CONNACK %d: %v", e.code, e.err) }

// expectRefused asserts err is a CONNACK refusal with code 5 (not authorized).
func expectRefused(t *testing.T, err error) {
	t.Helper()
	var ce *connectError
	if !errors.As(err, &ce) || ce.code != 5 {
		t.Fatalf("connect error %v, want CONNACK 5", err)
	}
}

func (cl *client) close() {
	if cl.c.IsConnectionOpen() {
		cl.c.Disconnect(100)
	}
}

// subscribe subscribes and returns the channel its messages arrive on.
func (cl *client) subscribe(filter string, qos byte) chan paho.Message {
	cl.t.Helper()
	ch := make(chan paho.Message, 100)
	tok := cl.c.Subscribe(filter, qos, func(_ paho.Client, m paho.Message) { ch <- m })
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		cl.t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	if code := tok.(*paho.SubscribeToken).Result()[filter]; code == 0x80 {
		cl.t.Fatalf("subscribe %s refused", filter)
	}
	return ch
}

func (cl *client) publish(topic string, qos byte, body []byte) {
	cl.t.Helper()
	tok := cl.c.Publish(topic, qos, false, body)
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		cl.t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// expectLost waits for the server to drop the connection.
func (cl *client) expectLost() {
	cl.t.Helper()
	select {
	case <-cl.lost:
	case <-time.After(wait):
		cl.t.Fatal("the server did not drop the connection")
	}
}

func recv(t *testing.T, ch <-chan paho.Message) paho.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(wait):
		t.Fatal("no message arrived")
		return nil
	}
}

var ridSeq atomic.Int64

func nextRID() string { return fmt.Sprint(ridSeq.Add(1)) }

func hubUser(e *Emulator, id, model string) string {
	u := e.HubHost() + "/" + id + "/?api-version=2021-04-12"
	if model != "" {
		u += "&model-id=" + url.QueryEscape(model)
	}
	return u
}

func dpsUser(e *Emulator, reg string) string {
	return e.IDScope() + "/registrations/" + reg + "/api-version=2019-03-31&ClientVersion=paho-test"
}

// testSAS builds a SAS token with no code of the emulator or the SDK:
// sr is the resource percent-encoded as the Node SDK does, the signature
// is HMAC-SHA256 over "sr\nse" (see internal/sas/testdata for vectors made
// with openssl that the emulator's own code is checked against).
func testSAS(t *testing.T, key, resource string, expiry time.Time, keyName string) string {
	t.Helper()
	sr := strings.ReplaceAll(url.QueryEscape(resource), "+", "%20")
	se := strconv.FormatInt(expiry.Unix(), 10)
	tok := "SharedAccessSignature sr=" + sr + "&sig=" + url.QueryEscape(hmacB64(t, key, sr+"\n"+se)) + "&se=" + se
	if keyName != "" {
		tok += "&skn=" + url.QueryEscape(keyName)
	}
	return tok
}

func hubSAS(t *testing.T, e *Emulator, id, key string, ttl time.Duration) string {
	t.Helper()
	return testSAS(t, key, e.HubHost()+"/devices/"+id, time.Now().Add(ttl), "")
}

func dpsSAS(t *testing.T, e *Emulator, reg, key string, ttl time.Duration) string {
	t.Helper()
	return testSAS(t, key, e.IDScope()+"/registrations/"+reg, time.Now().Add(ttl), "registration")
}

// derived is the device key of reg under groupKey, computed here.
func derived(t *testing.T, groupKey, reg string) string {
	t.Helper()
	return hmacB64(t, groupKey, reg)
}

// connectHub connects a device with a SAS token and subscribes to
// everything a device subscribes to. It returns the mailboxes.
type hubDevice struct {
	*client
	id                             string
	twinRes, desired, methods, c2d chan paho.Message
}

func connectHub(t *testing.T, e *Emulator, id, key string, clean bool) *hubDevice {
	t.Helper()
	cl, err := dial(t, e, dialOpts{clientID: id, username: hubUser(e, id, ""), password: hubSAS(t, e, id, key, time.Hour), clean: clean})
	if err != nil {
		t.Fatalf("hub connect %s: %v", id, err)
	}
	return subscribeAll(t, cl, id)
}

func subscribeAll(t *testing.T, cl *client, id string) *hubDevice {
	t.Helper()
	return &hubDevice{
		client:  cl,
		id:      id,
		twinRes: cl.subscribe("$iothub/twin/res/#", 0),
		desired: cl.subscribe("$iothub/twin/PATCH/properties/desired/#", 0),
		methods: cl.subscribe("$iothub/methods/POST/#", 0),
		c2d:     cl.subscribe("devices/"+id+"/messages/devicebound/#", 1),
	}
}

// twinRequest publishes a twin request and returns the status, the
// response query and the body of its answer.
func (d *hubDevice) twinRequest(topicPrefix string, body []byte) (status string, query url.Values, resp []byte) {
	d.t.Helper()
	rid := nextRID()
	d.publish(topicPrefix+"?$rid="+rid, 0, body)
	m := recv(d.t, d.twinRes)
	status, query = parseResTopic(d.t, m.Topic(), "$iothub/twin/res/")
	if query.Get("$rid") != rid {
		d.t.Fatalf("answer %s does not echo $rid %s", m.Topic(), rid)
	}
	return status, query, m.Payload()
}

// parseResTopic splits "{prefix}{status}/?{query}" and checks $rid comes first.
func parseResTopic(t *testing.T, topic, prefix string) (string, url.Values) {
	t.Helper()
	rest, ok := strings.CutPrefix(topic, prefix)
	if !ok {
		t.Fatalf("topic %q does not start with %q", topic, prefix)
	}
	status, q, ok := strings.Cut(rest, "/?")
	if !ok || !strings.HasPrefix(q, "$rid=") {
		t.Fatalf("topic %q: want {status}/?$rid=... with $rid first", topic)
	}
	vals := url.Values{}
	for _, kv := range strings.Split(q, "&") {
		k, v, _ := strings.Cut(kv, "=")
		vals.Add(k, v)
	}
	return status, vals
}

// ridOf returns the $rid of a request topic.
func ridOf(t *testing.T, topic string) string {
	t.Helper()
	i := strings.Index(topic, "?$rid=")
	if i < 0 {
		t.Fatalf("topic %q has no $rid", topic)
	}
	rid, _, _ := strings.Cut(topic[i+len("?$rid="):], "&")
	return rid
}

func hmacB64(t *testing.T, key, data string) string {
	t.Helper()
	k, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, k)
	m.Write([]byte(data))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

func decodeJSON(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", b, err)
	}
	return m
}
