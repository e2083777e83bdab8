package eventhubs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/iotc-go/iotc/emulator/internal/amqp1"
	"github.com/iotc-go/iotc/emulator/internal/core"
	"github.com/iotc-go/iotc/emulator/internal/sas"
)

// Protocol vocabulary of Event Hubs over AMQP.
const (
	propEpoch       = "com.microsoft:epoch"
	batchFormat     = uint32(0x80013700)
	mgmtNode        = "$management"
	mgmtRead        = "READ"
	typeEventHub    = "com.microsoft:eventhub"
	typePartition   = "com.microsoft:partition"
	statusCode      = "status-code"
	statusDesc      = "status-description"
	maxTokenBytes   = 4096
	receiveBatch    = 64 // events a receiver takes from its partition at once
	maxAddressBytes = 1024
)

// rights of a token.
type rights int

const (
	rightListen rights = 1 << iota
	rightSend
)

// grant is an accepted put-token: its resource path (lower case, no
// scheme or host) and expiry.
type grant struct {
	path   string
	expiry time.Time
	rights rights
}

// Conn is the Event Hubs side of one AMQP connection: its tokens and
// links. The AMQP front-end routes to it the put-tokens ClaimsAudience
// accepts and the links ClaimsAddress accepts. Its methods are safe for
// concurrent use.
type Conn struct {
	e  *Endpoint
	wg sync.WaitGroup

	mu     sync.Mutex
	grants []grant
	links  map[*amqp1.Link]*link
	mgmt   []*amqp1.Link // $management links where the server sends
	closed bool
}

// link is one Event Hubs link of a connection.
type link struct {
	l      *amqp1.Link
	node   node
	rs     *receiverSet // receivers: their partition's set
	epoch  *int64
	cancel context.CancelFunc
	rights rights      // what the link needs of a token (producers, receivers)
	timer  *time.Timer // detaches the link when no token covers it any more; guarded by Conn.mu
}

// node is a parsed Event Hubs link address.
type node struct {
	entity    string // "" for $management
	mgmt      bool
	group     string // consumer group (receivers)
	partition string // "" when the address names the entity (producers)
}

// NewConn returns the Event Hubs state of a new AMQP connection.
func (e *Endpoint) NewConn() *Conn {
	return &Conn{e: e, links: map[*amqp1.Link]*link{}}
}

// Close waits for the goroutines of the connection's links; call it once
// the AMQP connection has ended.
func (c *Conn) Close() {
	c.mu.Lock()
	c.closed = true
	var all []*link
	for _, lk := range c.links {
		all = append(all, lk)
	}
	c.mu.Unlock()
	for _, lk := range all {
		c.forget(lk)
	}
	c.wg.Wait()
}

// splitResource strips a scheme ("sb://", "amqps://", "amqp://",
// "https://") and host from an address or audience; it returns the host
// ("" when absent) and the path without its leading and trailing '/'.
func splitResource(s string) (host, path string) {
	for _, scheme := range []string{"sb://", "amqps://", "amqp://", "https://", "wss://"} {
		if len(s) >= len(scheme) && strings.EqualFold(s[:len(scheme)], scheme) {
			rest := s[len(scheme):]
			host, path, _ = strings.Cut(rest, "/")
			return host, strings.Trim(path, "/")
		}
	}
	return "", strings.Trim(s, "/")
}

// hostMatches reports whether host (maybe with a port) names the endpoint's host.
func (e *Endpoint) hostMatches(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return strings.EqualFold(strings.TrimSuffix(host, "."), e.opts.Host)
}

// entityOf returns the entity a path's first segment names.
func (e *Endpoint) entityOf(path string) *entity {
	first, _, _ := strings.Cut(path, "/")
	if first == "" {
		return nil
	}
	if u, err := url.PathUnescape(first); err == nil {
		first = u
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.entities[strings.ToLower(first)]
}

// ClaimsAudience reports whether a CBS put-token's audience names one of
// the endpoint's entities: "sb://{host}/{entity}[/...]" or
// "amqps://{host}[:port]/{entity}[/...]" (a scheme is required: a device's
// audience "{host}/devices/{id}" has none).
func (c *Conn) ClaimsAudience(aud string) bool {
	if len(aud) > maxAddressBytes {
		return false
	}
	if dec, err := url.QueryUnescape(aud); err == nil {
		aud = dec
	}
	// The Event Hubs clients send "sb://" (Node) or "amqps://" (Go)
	// audiences; a device's is "{host}/devices/{id}", whose first segment
	// is the host, which may be the built-in entity's name too.
	host, path := splitResource(aud)
	return host != "" && c.e.entityOf(path) != nil
}

// ClaimsAddress reports whether a link address names an Event Hubs node:
// "$management", "{entity}", "{entity}/$management",
// "{entity}/Partitions/{n}" or "{entity}/ConsumerGroups/{cg}/Partitions/{n}",
// with or without "amqps://{host}/".
func (c *Conn) ClaimsAddress(addr string) bool {
	if len(addr) > maxAddressBytes {
		return false
	}
	_, path := splitResource(addr)
	if strings.EqualFold(path, mgmtNode) {
		return true
	}
	return c.e.entityOf(path) != nil
}

// PutToken checks a put-token whose audience ClaimsAudience accepted: a
// SAS of one of the entity's policies (the hub's policies with
// ServiceConnect for the built-in entity; NamespacePolicy for the plain
// ones) whose resource is the audience or a prefix of it. It returns the
// CBS status (200, 401) and description; descriptions never quote the
// token.
func (c *Conn) PutToken(aud, token string) (int, string) {
	if token == "" || len(token) > maxTokenBytes {
		return 400, "the token must be a non-empty amqp-value string"
	}
	if dec, err := url.QueryUnescape(aud); err == nil {
		aud = dec
	}
	host, path := splitResource(aud)
	if host != "" && !c.e.hostMatches(host) {
		return 401, "Unauthorized: audience names host " + strconv.Quote(cut(host))
	}
	en := c.e.entityOf(path)
	if en == nil {
		return 404, "Not Found: no event hub in audience"
	}
	g, err := c.e.checkToken(en, token)
	if err != nil {
		return 401, "Unauthorized: " + err.Error()
	}
	if !isPrefixPath(g.path, strings.ToLower(path)) {
		return 401, "Unauthorized: the token's resource does not cover the audience"
	}
	c.mu.Lock()
	c.grants = append(c.grants[:0:0], liveGrants(c.grants, c.e.now())...)
	c.grants = append(c.grants, g)
	c.mu.Unlock()
	return 200, "OK"
}

func liveGrants(gs []grant, now time.Time) []grant {
	var out []grant
	for _, g := range gs {
		if g.expiry.After(now) {
			out = append(out, g)
		}
	}
	return out
}

// isPrefixPath reports whether prefix is path or a '/'-bounded prefix of it.
func isPrefixPath(prefix, path string) bool {
	return prefix == "" || prefix == path || strings.HasPrefix(path, prefix+"/")
}

// checkToken verifies a SAS token for entity en and returns its grant.
func (e *Endpoint) checkToken(en *entity, token string) (grant, error) {
	tok, err := sas.Parse(token)
	if err != nil {
		return grant{}, errors.New("malformed SAS token")
	}
	host, path := splitResource(tok.Resource)
	if host == "" { // "{host}/{entity}" without a scheme
		host, path, _ = strings.Cut(path, "/")
	}
	if !e.hostMatches(host) {
		return grant{}, fmt.Errorf("the token's resource names host %q", cut(host))
	}
	type key struct {
		keys   []string
		rights rights
	}
	var k *key
	if en.builtin {
		for _, p := range e.m.Policies() {
			if p.Name == tok.KeyName && p.Rights&core.RightServiceConnect != 0 {
				k = &key{keys: []string{p.PrimaryKey, p.SecondaryKey}, rights: rightListen}
			}
		}
	} else if tok.KeyName == NamespacePolicy {
		e.mu.Lock()
		k = &key{keys: []string{e.nsKey, e.nsKey2}, rights: rightListen | rightSend}
		e.mu.Unlock()
	}
	if k == nil {
		return grant{}, fmt.Errorf("no shared access policy %q with access to %s", cut(tok.KeyName), en.name)
	}
	verr := sas.ErrBadSignature
	for _, kk := range k.keys {
		err := tok.VerifyServiceBus(kk, e.now())
		if err == nil {
			return grant{path: strings.ToLower(path), expiry: tok.Expiry, rights: k.rights}, nil
		}
		if errors.Is(err, sas.ErrExpired) {
			verr = err
		}
	}
	return grant{}, fmt.Errorf("policy %q: %w", tok.KeyName, verr)
}

// allowed reports whether a live grant covers path with r.
func (c *Conn) allowed(path string, r rights) bool {
	return !c.coveredUntil(path, r).IsZero()
}

// coveredUntil is the latest expiry of the live grants that cover path
// with r; zero when none does.
func (c *Conn) coveredUntil(path string, r rights) time.Time {
	path = strings.ToLower(path)
	now := c.e.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	var until time.Time
	for _, g := range c.grants {
		if g.expiry.After(now) && g.rights&r != 0 && isPrefixPath(g.path, path) && g.expiry.After(until) {
			until = g.expiry
		}
	}
	return until
}

// watchToken detaches lk with amqp:unauthorized-access once no token of
// the connection covers it any more (a put-token renewing it in time
// keeps it), as IoT Hub does with device links.
func (c *Conn) watchToken(lk *link) {
	until := c.coveredUntil(nodePath(lk.node), lk.rights)
	if until.IsZero() {
		_ = lk.l.Detach(&amqp1.Error{Condition: amqp1.ErrCondUnauthorizedAccess, Description: "the SAS token expired"})
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.links[lk.l] != lk {
		return
	}
	lk.timer = time.AfterFunc(until.Sub(c.e.now()), func() { c.watchToken(lk) })
}

// parseNode parses a claimed link address.
func (e *Endpoint) parseNode(addr string) (node, error) {
	_, path := splitResource(addr)
	if strings.EqualFold(path, mgmtNode) {
		return node{mgmt: true}, nil
	}
	segs := strings.Split(path, "/")
	for i, s := range segs {
		if u, err := url.PathUnescape(s); err == nil {
			segs[i] = u
		}
	}
	n := node{entity: segs[0]}
	switch {
	case len(segs) == 1:
	case len(segs) == 2 && strings.EqualFold(segs[1], mgmtNode):
		n.mgmt = true
	case len(segs) == 3 && strings.EqualFold(segs[1], "Partitions"):
		n.partition = segs[2]
	case len(segs) == 5 && strings.EqualFold(segs[1], "ConsumerGroups") && strings.EqualFold(segs[3], "Partitions"):
		n.group, n.partition = segs[2], segs[4]
	default:
		return n, fmt.Errorf("address %q names no Event Hubs node", cut(addr))
	}
	return n, nil
}

func notFound(format string, args ...any) error {
	return &amqp1.Error{Condition: amqp1.ErrCondNotFound, Description: fmt.Sprintf(format, args...)}
}

func unauthorized(format string, args ...any) error {
	return &amqp1.Error{Condition: amqp1.ErrCondUnauthorizedAccess, Description: fmt.Sprintf(format, args...)}
}

// Attach accepts or refuses a link whose address ClaimsAddress accepted:
// $management in both directions (with any valid token of the
// connection), receivers of a consumer group's partition (Listen) and
// senders to an entity or partition (Send). The refusals are
// amqp:unauthorized-access (no token covers the address), amqp:not-found
// (entity, consumer group or partition), amqp:invalid-field (a bad
// filter) and amqp:link:stolen (an epoch receiver with a higher epoch
// holds the partition).
func (c *Conn) Attach(ctx context.Context, l *amqp1.Link) error {
	n, err := c.e.parseNode(l.Address())
	if err != nil {
		return notFound("%v", err)
	}
	lk := &link{l: l, node: n}
	if n.mgmt {
		c.mu.Lock()
		ok := len(liveGrants(c.grants, c.e.now())) > 0
		if ok {
			c.links[l] = lk
			if l.Role() == amqp1.RoleSender {
				c.mgmt = append(c.mgmt, l)
			}
		}
		c.mu.Unlock()
		if !ok {
			return unauthorized("$management needs a put-token first")
		}
		return nil
	}
	path := strings.Trim(nodePath(n), "/")
	switch l.Role() {
	case amqp1.RoleReceiver: // a producer
		if n.group != "" {
			return &amqp1.Error{Condition: amqp1.ErrCondNotAllowed, Description: "a consumer group partition only sends"}
		}
		if !c.allowed(path, rightSend) {
			return unauthorized("no valid token with Send for %s", cut(path))
		}
		if _, err := c.producerPartition(n); err != nil {
			return err
		}
		lk.rights = rightSend
		c.mu.Lock()
		c.links[l] = lk
		c.mu.Unlock()
		c.watchToken(lk)
		return nil
	default: // a consumer
		if n.group == "" {
			return &amqp1.Error{Condition: amqp1.ErrCondNotAllowed, Description: "receive from {event hub}/ConsumerGroups/{group}/Partitions/{id}"}
		}
		if !c.allowed(path, rightListen) {
			return unauthorized("no valid token with Listen for %s", cut(path))
		}
		return c.attachReceiver(ctx, lk)
	}
}

func nodePath(n node) string {
	switch {
	case n.group != "":
		return n.entity + "/ConsumerGroups/" + n.group + "/Partitions/" + n.partition
	case n.partition != "":
		return n.entity + "/Partitions/" + n.partition
	}
	return n.entity
}

// producerPartition checks a producer's node and returns its partition
// (-1 for the entity).
func (c *Conn) producerPartition(n node) (int, error) {
	e := c.e
	e.mu.Lock()
	defer e.mu.Unlock()
	en := e.entities[strings.ToLower(n.entity)]
	if en == nil {
		return 0, notFound("no event hub %q", cut(n.entity))
	}
	if en.builtin {
		return 0, &amqp1.Error{Condition: amqp1.ErrCondNotAllowed, Description: "the built-in endpoint takes device-to-cloud messages only"}
	}
	if n.partition == "" {
		return -1, nil
	}
	_, p, err := e.lookupLocked(n.entity, n.partition)
	if err != nil {
		return 0, notFound("%v", err)
	}
	return p.id, nil
}

// Message handles a delivery on a link Attach accepted: a $management
// request or a producer's event (or batch of events, message format
// 0x80013700), accepted once stored.
func (c *Conn) Message(ctx context.Context, l *amqp1.Link, d *amqp1.Delivery) amqp1.Outcome {
	c.mu.Lock()
	lk := c.links[l]
	c.mu.Unlock()
	if lk == nil {
		return rejected(amqp1.ErrCondIllegalState, "link is not attached")
	}
	if lk.node.mgmt {
		c.management(ctx, d.Message)
		return &amqp1.Accepted{}
	}
	part, err := c.producerPartition(lk.node)
	if err != nil {
		var ae *amqp1.Error
		if errors.As(err, &ae) {
			return &amqp1.Rejected{Error: ae}
		}
		return rejected(amqp1.ErrCondInternalError, err.Error())
	}
	if !c.allowed(nodePath(lk.node), rightSend) {
		return rejected(amqp1.ErrCondUnauthorizedAccess, "the token expired")
	}
	msgs := []*amqp.Message{d.Message}
	if d.Format == batchFormat {
		msgs = msgs[:0]
		envelopeKey := partitionKeyOf(d.Message)
		for i, raw := range d.Message.Data {
			m := new(amqp.Message)
			if err := m.UnmarshalBinary(raw); err != nil {
				return rejected(amqp1.ErrCondDecodeError, fmt.Sprintf("event %d of the batch: %v", i, err))
			}
			if envelopeKey != "" && partitionKeyOf(m) == "" {
				if m.Annotations == nil {
					m.Annotations = amqp.Annotations{}
				}
				m.Annotations[annPartKey] = envelopeKey
			}
			msgs = append(msgs, m)
		}
	}
	if err := c.e.Publish(lk.node.entity, part, msgs); err != nil {
		cond := amqp1.ErrCondInternalError
		switch {
		case errors.Is(err, core.ErrNotFound):
			cond = amqp1.ErrCondNotFound
		case errors.Is(err, core.ErrInvalid):
			cond = amqp1.ErrCondNotAllowed
		}
		return rejected(cond, err.Error())
	}
	return &amqp1.Accepted{}
}

func rejected(cond amqp1.Symbol, desc string) amqp1.Outcome {
	return &amqp1.Rejected{Error: &amqp1.Error{Condition: cond, Description: desc}}
}

// Detach forgets a link that ended.
func (c *Conn) Detach(l *amqp1.Link) {
	c.mu.Lock()
	lk := c.links[l]
	c.mu.Unlock()
	if lk != nil {
		c.forget(lk)
	}
}

func (c *Conn) forget(lk *link) {
	c.mu.Lock()
	delete(c.links, lk.l)
	if lk.timer != nil {
		lk.timer.Stop()
	}
	for i, m := range c.mgmt {
		if m == lk.l {
			c.mgmt = append(c.mgmt[:i:i], c.mgmt[i+1:]...)
			break
		}
	}
	c.mu.Unlock()
	if lk.cancel != nil {
		lk.cancel()
	}
	if lk.rs != nil {
		lk.rs.remove(c.e, lk)
	}
}

// ---- $management ----

// management answers a READ of com.microsoft:eventhub or
// com.microsoft:partition on the $management link whose target the
// request's reply-to names (else the newest one).
func (c *Conn) management(ctx context.Context, req *amqp.Message) {
	status, desc, body := c.read(req)
	reply := &amqp.Message{
		ApplicationProperties: map[string]any{statusCode: int32(status), statusDesc: desc},
	}
	if body != nil {
		reply.Value = body
	}
	var replyTo string
	if p := req.Properties; p != nil {
		if p.MessageID != nil {
			reply.Properties = &amqp.MessageProperties{CorrelationID: p.MessageID}
		}
		if p.ReplyTo != nil {
			replyTo = *p.ReplyTo
		}
	}
	c.mu.Lock()
	var out *amqp1.Link
	for _, l := range c.mgmt {
		if t := l.Target(); replyTo != "" && t != nil && t.Address == replyTo {
			out = l
		}
	}
	if out == nil && len(c.mgmt) > 0 {
		out = c.mgmt[len(c.mgmt)-1]
	}
	if out == nil || c.closed {
		c.mu.Unlock()
		return
	}
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		_, _ = out.Send(out.Context(), reply)
	}()
}

func textProp(m *amqp.Message, key string) string {
	v, ok := m.ApplicationProperties[key]
	if !ok {
		return ""
	}
	switch v := v.(type) {
	case string:
		return v
	case amqp.Symbol:
		return string(v)
	}
	return ""
}

// read performs a $management request and returns its status,
// description and body.
func (c *Conn) read(req *amqp.Message) (int, string, any) {
	if op := textProp(req, "operation"); op != mgmtRead {
		return 400, "unsupported operation " + strconv.Quote(cut(op)), nil
	}
	name := textProp(req, "name")
	e := c.e
	e.mu.Lock()
	en := e.entities[strings.ToLower(name)]
	e.mu.Unlock()
	if en == nil {
		return 404, "no event hub " + strconv.Quote(cut(name)), nil
	}
	if tok := textProp(req, "security_token"); tok != "" {
		if _, err := e.checkToken(en, tok); err != nil {
			return 401, "Unauthorized: " + err.Error(), nil
		}
	} else if !c.allowed(en.name, rightListen|rightSend) {
		return 401, "Unauthorized: no valid token for " + en.name, nil
	}
	switch typ := textProp(req, "type"); typ {
	case typeEventHub:
		ids := make([]string, len(en.parts))
		for i := range en.parts {
			ids[i] = strconv.Itoa(i)
		}
		return 200, "OK", map[string]any{
			"name":                  en.name,
			"type":                  typeEventHub,
			"created_at":            en.created,
			"partition_count":       int32(len(en.parts)),
			"partition_ids":         ids,
			"georeplication_factor": int32(1),
		}
	case typePartition:
		pi, err := e.Partition(en.name, textProp(req, "partition"))
		if err != nil {
			return 404, err.Error(), nil
		}
		return 200, "OK", map[string]any{
			"name":                          pi.Entity,
			"type":                          typePartition,
			"partition":                     pi.ID,
			"begin_sequence_number":         pi.BeginSeq,
			"last_enqueued_sequence_number": pi.LastSeq,
			"last_enqueued_offset":          pi.LastOffset,
			"last_enqueued_time_utc":        pi.LastEnqueuedTime,
			"is_partition_empty":            pi.Empty,
		}
	default:
		return 400, "unsupported type " + strconv.Quote(cut(typ)), nil
	}
}
