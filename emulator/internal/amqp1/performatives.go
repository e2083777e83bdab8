package amqp1

import (
	"fmt"
	"math"
)

// Descriptor codes (numeric) of the composite types this package knows.
const (
	descOpen           uint64 = 0x10
	descBegin          uint64 = 0x11
	descAttach         uint64 = 0x12
	descFlow           uint64 = 0x13
	descTransfer       uint64 = 0x14
	descDisposition    uint64 = 0x15
	descDetach         uint64 = 0x16
	descEnd            uint64 = 0x17
	descClose          uint64 = 0x18
	descError          uint64 = 0x1d
	descReceived       uint64 = 0x23
	descAccepted       uint64 = 0x24
	descRejected       uint64 = 0x25
	descReleased       uint64 = 0x26
	descModified       uint64 = 0x27
	descSource         uint64 = 0x28
	descTarget         uint64 = 0x29
	descSASLMechanisms uint64 = 0x40
	descSASLInit       uint64 = 0x41
	descSASLChallenge  uint64 = 0x42
	descSASLResponse   uint64 = 0x43
	descSASLOutcome    uint64 = 0x44
)

// symbolicDescriptors maps the symbolic descriptor names to their codes, so
// that peers using either form are understood.
var symbolicDescriptors = map[Symbol]uint64{
	"amqp:open:list":            descOpen,
	"amqp:begin:list":           descBegin,
	"amqp:attach:list":          descAttach,
	"amqp:flow:list":            descFlow,
	"amqp:transfer:list":        descTransfer,
	"amqp:disposition:list":     descDisposition,
	"amqp:detach:list":          descDetach,
	"amqp:end:list":             descEnd,
	"amqp:close:list":           descClose,
	"amqp:error:list":           descError,
	"amqp:received:list":        descReceived,
	"amqp:accepted:list":        descAccepted,
	"amqp:rejected:list":        descRejected,
	"amqp:released:list":        descReleased,
	"amqp:modified:list":        descModified,
	"amqp:source:list":          descSource,
	"amqp:target:list":          descTarget,
	"amqp:sasl-mechanisms:list": descSASLMechanisms,
	"amqp:sasl-init:list":       descSASLInit,
	"amqp:sasl-challenge:list":  descSASLChallenge,
	"amqp:sasl-response:list":   descSASLResponse,
	"amqp:sasl-outcome:list":    descSASLOutcome,
}

// descriptorNames maps codes back to their symbolic names for error messages.
var descriptorNames = func() map[uint64]string {
	m := make(map[uint64]string, len(symbolicDescriptors))
	for s, c := range symbolicDescriptors {
		m[c] = string(s)
	}
	return m
}()

// descriptorCode normalises a descriptor to its numeric code (0 when unknown).
func descriptorCode(d any) uint64 {
	switch d := d.(type) {
	case uint64:
		return d
	case Symbol:
		return symbolicDescriptors[d]
	}
	return 0
}

// Role is the role of a link endpoint: [RoleSender] (false on the wire) or
// [RoleReceiver] (true).
type Role bool

// Link roles.
const (
	RoleSender   Role = false
	RoleReceiver Role = true
)

// String returns "sender" or "receiver".
func (r Role) String() string {
	if r == RoleReceiver {
		return "receiver"
	}
	return "sender"
}

// SenderSettleMode is the snd-settle-mode of a link (Part 2 §2.8.2).
type SenderSettleMode uint8

// Sender settle modes; the default on the wire is [SenderSettleModeMixed].
const (
	SenderSettleModeUnsettled SenderSettleMode = 0
	SenderSettleModeSettled   SenderSettleMode = 1
	SenderSettleModeMixed     SenderSettleMode = 2
)

// ReceiverSettleMode is the rcv-settle-mode of a link (Part 2 §2.8.3).
type ReceiverSettleMode uint8

// Receiver settle modes; the default on the wire is [ReceiverSettleModeFirst].
const (
	ReceiverSettleModeFirst  ReceiverSettleMode = 0
	ReceiverSettleModeSecond ReceiverSettleMode = 1
)

// Performative is one of the frame bodies of this package: *Open, *Begin,
// *Attach, *Flow, *Transfer, *Disposition, *Detach, *End, *Close (AMQP
// frames) or *SASLMechanisms, *SASLInit, *SASLChallenge, *SASLResponse,
// *SASLOutcome (SASL frames).
type Performative interface {
	amqpAppender
	performative()
}

// Open is the open performative (Part 2 §2.7.1).
type Open struct {
	// ContainerID is mandatory.
	ContainerID string
	// Hostname is the virtual host the peer wants; "" when absent.
	Hostname string
	// MaxFrameSize is the largest frame the sender accepts; absent decodes as 4294967295.
	MaxFrameSize uint32
	// ChannelMax is the highest channel number; absent decodes as 65535.
	ChannelMax uint16
	// IdleTimeout is the sender's idle time-out in milliseconds; 0 = none.
	IdleTimeout uint32
	// OutgoingLocales and IncomingLocales are the locales; nil when absent.
	OutgoingLocales, IncomingLocales []Symbol
	// OfferedCapabilities and DesiredCapabilities; nil when absent.
	OfferedCapabilities, DesiredCapabilities []Symbol
	// Properties are the connection properties; nil when absent.
	Properties map[string]any
}

// Begin is the begin performative (Part 2 §2.7.2).
type Begin struct {
	// RemoteChannel is set when answering a peer's begin; nil otherwise.
	RemoteChannel *uint16
	// NextOutgoingID is the transfer-id of the sender's next transfer frame.
	NextOutgoingID uint32
	// IncomingWindow and OutgoingWindow are the session windows, in frames.
	IncomingWindow, OutgoingWindow uint32
	// HandleMax is the highest link handle; absent decodes as 4294967295.
	HandleMax uint32
	// OfferedCapabilities and DesiredCapabilities; nil when absent.
	OfferedCapabilities, DesiredCapabilities []Symbol
	// Properties are the session properties; nil when absent.
	Properties map[string]any
}

// Attach is the attach performative (Part 2 §2.7.3).
type Attach struct {
	// Name is the link name, mandatory.
	Name string
	// Handle is the sender's handle for the link.
	Handle uint32
	// Role is the sender's role on the link.
	Role Role
	// SndSettleMode defaults to mixed when absent.
	SndSettleMode SenderSettleMode
	// RcvSettleMode defaults to first when absent.
	RcvSettleMode ReceiverSettleMode
	// Source and Target are the terminus; nil when absent (a refusal).
	Source *Source
	Target *Target
	// Unsettled is the unsettled delivery map (link recovery, not supported); nil when absent.
	Unsettled Map
	// IncompleteUnsettled is the incomplete-unsettled flag.
	IncompleteUnsettled bool
	// InitialDeliveryCount is mandatory when Role is sender; nil when absent.
	InitialDeliveryCount *uint32
	// MaxMessageSize is the largest message the sender accepts; 0 = no limit.
	MaxMessageSize uint64
	// OfferedCapabilities and DesiredCapabilities; nil when absent.
	OfferedCapabilities, DesiredCapabilities []Symbol
	// Properties are the link properties; nil when absent.
	Properties map[string]any
}

// Flow is the flow performative (Part 2 §2.7.4). Handle is nil for a
// session-only flow.
type Flow struct {
	// NextIncomingID is the sender's next-incoming-id; nil before the peer's begin was seen.
	NextIncomingID *uint32
	// IncomingWindow, NextOutgoingID and OutgoingWindow are the session state (mandatory).
	IncomingWindow uint32
	NextOutgoingID uint32
	OutgoingWindow uint32
	// Handle names the link; nil for a session-only flow.
	Handle *uint32
	// DeliveryCount, LinkCredit and Available are the link state; nil when absent.
	DeliveryCount *uint32
	LinkCredit    *uint32
	Available     *uint32
	// Drain asks the sender to use or give back all credit.
	Drain bool
	// Echo asks the peer to answer with its own flow state.
	Echo bool
	// Properties are link-state properties; nil when absent.
	Properties map[string]any
}

// Transfer is the transfer performative (Part 2 §2.7.5). Payload is not part
// of the performative: it is the rest of the frame body.
type Transfer struct {
	// Handle names the link (mandatory).
	Handle uint32
	// DeliveryID, DeliveryTag and MessageFormat are set on the first frame of a delivery.
	DeliveryID    *uint32
	DeliveryTag   []byte
	MessageFormat *uint32
	// Settled marks a pre-settled delivery.
	Settled bool
	// More says further frames of the same delivery follow.
	More bool
	// RcvSettleMode optionally overrides the link's mode; nil when absent.
	RcvSettleMode *ReceiverSettleMode
	// State is the delivery state (link recovery); nil when absent.
	State DeliveryState
	// Resume, Aborted and Batchable are the flags of the same names.
	Resume    bool
	Aborted   bool
	Batchable bool
	// Payload is the message bytes carried by this frame.
	Payload []byte
}

// Disposition is the disposition performative (Part 2 §2.7.6).
type Disposition struct {
	// Role is the role of the sender of the disposition.
	Role Role
	// First and Last (nil = First) bound the delivery-ids concerned.
	First uint32
	Last  *uint32
	// Settled settles the deliveries.
	Settled bool
	// State is the outcome or other delivery state; nil when absent.
	State DeliveryState
	// Batchable is the batchable hint.
	Batchable bool
}

// Detach is the detach performative (Part 2 §2.7.7).
type Detach struct {
	// Handle names the link.
	Handle uint32
	// Closed is true for a closing (not suspending) detach.
	Closed bool
	// Error says why; nil for a clean detach.
	Error *Error
}

// End is the end performative (Part 2 §2.7.8).
type End struct {
	// Error says why; nil for a clean end.
	Error *Error
}

// Close is the close performative (Part 2 §2.7.9).
type Close struct {
	// Error says why; nil for a clean close.
	Error *Error
}

// SASLMechanisms is sasl-mechanisms (Part 5 §5.3.3.1).
type SASLMechanisms struct {
	// Mechanisms are the mechanisms the server offers, in preference order.
	Mechanisms []Symbol
}

// SASLInit is sasl-init (Part 5 §5.3.3.2).
type SASLInit struct {
	// Mechanism is the chosen mechanism (mandatory).
	Mechanism Symbol
	// InitialResponse is the mechanism's first message (PLAIN: authzid NUL user NUL password).
	InitialResponse []byte
	// Hostname is the virtual host; "" when absent.
	Hostname string
}

// SASLChallenge is sasl-challenge (Part 5 §5.3.3.3).
type SASLChallenge struct {
	// Challenge is the server's challenge data.
	Challenge []byte
}

// SASLResponse is sasl-response (Part 5 §5.3.3.4).
type SASLResponse struct {
	// Response is the client's response data.
	Response []byte
}

// SASLCode is the sasl-outcome code (Part 5 §5.3.3.6).
type SASLCode uint8

// SASL outcome codes.
const (
	SASLCodeOK      SASLCode = 0
	SASLCodeAuth    SASLCode = 1
	SASLCodeSys     SASLCode = 2
	SASLCodeSysPerm SASLCode = 3
	SASLCodeSysTemp SASLCode = 4
)

// SASLOutcome is sasl-outcome (Part 5 §5.3.3.5).
type SASLOutcome struct {
	// Code is the result of the authentication.
	Code SASLCode
	// AdditionalData is optional mechanism data; nil when absent.
	AdditionalData []byte
}

// Source is the source terminus (Part 3 §3.5.3). Filter and DefaultOutcome
// are kept as decoded so that they can be echoed back.
type Source struct {
	// Address is the node address ("" when absent); the other fields are
	// those of the specification, zero when absent.
	Address               string
	Durable               uint32
	ExpiryPolicy          Symbol
	Timeout               uint32
	Dynamic               bool
	DynamicNodeProperties map[string]any
	DistributionMode      Symbol
	Filter                Map
	DefaultOutcome        any
	Outcomes              []Symbol
	Capabilities          []Symbol
}

// Target is the target terminus (Part 3 §3.5.4).
type Target struct {
	// Address is the node address ("" when absent); the other fields are
	// those of the specification, zero when absent.
	Address               string
	Durable               uint32
	ExpiryPolicy          Symbol
	Timeout               uint32
	Dynamic               bool
	DynamicNodeProperties map[string]any
	Capabilities          []Symbol
}

// DeliveryState is a delivery state (Part 3 §3.4): *Received or an [Outcome].
type DeliveryState interface {
	amqpAppender
	deliveryState()
}

// Outcome is a terminal delivery state: *Accepted, *Rejected, *Released or
// *Modified.
type Outcome interface {
	DeliveryState
	outcome()
}

// Received is the received delivery state (Part 3 §3.4.1).
type Received struct {
	// SectionNumber and SectionOffset locate the first byte not yet received.
	SectionNumber uint32
	SectionOffset uint64
}

// Accepted is the accepted outcome (Part 3 §3.4.2).
type Accepted struct{}

// Rejected is the rejected outcome (Part 3 §3.4.3); Error may be nil.
type Rejected struct {
	// Error says why the message was rejected; may be nil.
	Error *Error
}

// Released is the released outcome (Part 3 §3.4.4).
type Released struct{}

// Modified is the modified outcome (Part 3 §3.4.5).
type Modified struct {
	// DeliveryFailed counts the attempt as failed.
	DeliveryFailed bool
	// UndeliverableHere asks not to redeliver on this link.
	UndeliverableHere bool
	// MessageAnnotations are merged into the message; nil when absent.
	MessageAnnotations map[string]any
}

func (*Open) performative()           {}
func (*Begin) performative()          {}
func (*Attach) performative()         {}
func (*Flow) performative()           {}
func (*Transfer) performative()       {}
func (*Disposition) performative()    {}
func (*Detach) performative()         {}
func (*End) performative()            {}
func (*Close) performative()          {}
func (*SASLMechanisms) performative() {}
func (*SASLInit) performative()       {}
func (*SASLChallenge) performative()  {}
func (*SASLResponse) performative()   {}
func (*SASLOutcome) performative()    {}

func (*Received) deliveryState() {}
func (*Accepted) deliveryState() {}
func (*Rejected) deliveryState() {}
func (*Released) deliveryState() {}
func (*Modified) deliveryState() {}
func (*Accepted) outcome()       {}
func (*Rejected) outcome()       {}
func (*Released) outcome()       {}
func (*Modified) outcome()       {}

// ---- encoding ----

// appendDescribedList encodes code + list(fields) with trailing nulls trimmed.
func appendDescribedList(b []byte, code uint64, fields []any, depth int) ([]byte, error) {
	for len(fields) > 0 && fields[len(fields)-1] == nil {
		fields = fields[:len(fields)-1]
	}
	b = append(b, codeDescribed)
	b, err := appendValue(b, code, depth+1)
	if err != nil {
		return nil, err
	}
	return appendList(b, fields, depth+1)
}

func optU32(p *uint32) any {
	if p == nil {
		return nil
	}
	return *p
}

func optStr(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func optSym(s Symbol) any {
	if s == "" {
		return nil
	}
	return s
}

func optSyms(s []Symbol) any {
	if s == nil {
		return nil
	}
	return s
}

func optBin(b []byte) any {
	if b == nil {
		return nil
	}
	return b
}

func optFields(m map[string]any) any {
	if m == nil {
		return nil
	}
	return m
}

func optErr(e *Error) any {
	if e == nil {
		return nil
	}
	return e
}

func optState(s DeliveryState) any {
	if s == nil {
		return nil
	}
	return s
}

func (e *Error) appendAMQP(b []byte, depth int) ([]byte, error) {
	return appendDescribedList(b, descError, []any{e.Condition, optStr(e.Description), optFields(e.Info)}, depth)
}

func (p *Open) appendAMQP(b []byte, depth int) ([]byte, error) {
	var idle any
	if p.IdleTimeout != 0 {
		idle = p.IdleTimeout
	}
	return appendDescribedList(b, descOpen, []any{
		p.ContainerID, optStr(p.Hostname), p.MaxFrameSize, p.ChannelMax, idle,
		optSyms(p.OutgoingLocales), optSyms(p.IncomingLocales),
		optSyms(p.OfferedCapabilities), optSyms(p.DesiredCapabilities), optFields(p.Properties),
	}, depth)
}

func (p *Begin) appendAMQP(b []byte, depth int) ([]byte, error) {
	var rc any
	if p.RemoteChannel != nil {
		rc = *p.RemoteChannel
	}
	return appendDescribedList(b, descBegin, []any{
		rc, p.NextOutgoingID, p.IncomingWindow, p.OutgoingWindow, p.HandleMax,
		optSyms(p.OfferedCapabilities), optSyms(p.DesiredCapabilities), optFields(p.Properties),
	}, depth)
}

func (p *Attach) appendAMQP(b []byte, depth int) ([]byte, error) {
	var src, tgt, mms, unsettled any
	if p.Source != nil {
		src = p.Source
	}
	if p.Target != nil {
		tgt = p.Target
	}
	if p.MaxMessageSize != 0 {
		mms = p.MaxMessageSize
	}
	if p.Unsettled != nil {
		unsettled = p.Unsettled
	}
	return appendDescribedList(b, descAttach, []any{
		p.Name, p.Handle, bool(p.Role), uint8(p.SndSettleMode), uint8(p.RcvSettleMode),
		src, tgt, unsettled, p.IncompleteUnsettled, optU32(p.InitialDeliveryCount), mms,
		optSyms(p.OfferedCapabilities), optSyms(p.DesiredCapabilities), optFields(p.Properties),
	}, depth)
}

func (p *Flow) appendAMQP(b []byte, depth int) ([]byte, error) {
	return appendDescribedList(b, descFlow, []any{
		optU32(p.NextIncomingID), p.IncomingWindow, p.NextOutgoingID, p.OutgoingWindow,
		optU32(p.Handle), optU32(p.DeliveryCount), optU32(p.LinkCredit), optU32(p.Available),
		p.Drain, p.Echo, optFields(p.Properties),
	}, depth)
}

func (p *Transfer) appendAMQP(b []byte, depth int) ([]byte, error) {
	var rsm any
	if p.RcvSettleMode != nil {
		rsm = uint8(*p.RcvSettleMode)
	}
	return appendDescribedList(b, descTransfer, []any{
		p.Handle, optU32(p.DeliveryID), optBin(p.DeliveryTag), optU32(p.MessageFormat),
		p.Settled, p.More, rsm, optState(p.State), p.Resume, p.Aborted, p.Batchable,
	}, depth)
}

func (p *Disposition) appendAMQP(b []byte, depth int) ([]byte, error) {
	return appendDescribedList(b, descDisposition, []any{
		bool(p.Role), p.First, optU32(p.Last), p.Settled, optState(p.State), p.Batchable,
	}, depth)
}

func (p *Detach) appendAMQP(b []byte, depth int) ([]byte, error) {
	return appendDescribedList(b, descDetach, []any{p.Handle, p.Closed, optErr(p.Error)}, depth)
}

func (p *End) appendAMQP(b []byte, depth int) ([]byte, error) {
	return appendDescribedList(b, descEnd, []any{optErr(p.Error)}, depth)
}

func (p *Close) appendAMQP(b []byte, depth int) ([]byte, error) {
	return appendDescribedList(b, descClose, []any{optErr(p.Error)}, depth)
}

func (p *SASLMechanisms) appendAMQP(b []byte, depth int) ([]byte, error) {
	mechs := p.Mechanisms
	if mechs == nil {
		mechs = []Symbol{}
	}
	return appendDescribedList(b, descSASLMechanisms, []any{mechs}, depth)
}

func (p *SASLInit) appendAMQP(b []byte, depth int) ([]byte, error) {
	return appendDescribedList(b, descSASLInit, []any{p.Mechanism, optBin(p.InitialResponse), optStr(p.Hostname)}, depth)
}

func (p *SASLChallenge) appendAMQP(b []byte, depth int) ([]byte, error) {
	ch := p.Challenge
	if ch == nil {
		ch = []byte{}
	}
	return appendDescribedList(b, descSASLChallenge, []any{ch}, depth)
}

func (p *SASLResponse) appendAMQP(b []byte, depth int) ([]byte, error) {
	r := p.Response
	if r == nil {
		r = []byte{}
	}
	return appendDescribedList(b, descSASLResponse, []any{r}, depth)
}

func (p *SASLOutcome) appendAMQP(b []byte, depth int) ([]byte, error) {
	return appendDescribedList(b, descSASLOutcome, []any{uint8(p.Code), optBin(p.AdditionalData)}, depth)
}

func (s *Source) appendAMQP(b []byte, depth int) ([]byte, error) {
	var filter any
	if s.Filter != nil {
		filter = s.Filter
	}
	var durable, timeout any
	if s.Durable != 0 {
		durable = s.Durable
	}
	if s.Timeout != 0 {
		timeout = s.Timeout
	}
	return appendDescribedList(b, descSource, []any{
		optStr(s.Address), durable, optSym(s.ExpiryPolicy), timeout, s.Dynamic,
		optFields(s.DynamicNodeProperties), optSym(s.DistributionMode), filter,
		s.DefaultOutcome, optSyms(s.Outcomes), optSyms(s.Capabilities),
	}, depth)
}

func (t *Target) appendAMQP(b []byte, depth int) ([]byte, error) {
	var durable, timeout any
	if t.Durable != 0 {
		durable = t.Durable
	}
	if t.Timeout != 0 {
		timeout = t.Timeout
	}
	return appendDescribedList(b, descTarget, []any{
		optStr(t.Address), durable, optSym(t.ExpiryPolicy), timeout, t.Dynamic,
		optFields(t.DynamicNodeProperties), optSyms(t.Capabilities),
	}, depth)
}

func (s *Received) appendAMQP(b []byte, depth int) ([]byte, error) {
	return appendDescribedList(b, descReceived, []any{s.SectionNumber, s.SectionOffset}, depth)
}

func (*Accepted) appendAMQP(b []byte, depth int) ([]byte, error) {
	return appendDescribedList(b, descAccepted, nil, depth)
}

func (s *Rejected) appendAMQP(b []byte, depth int) ([]byte, error) {
	return appendDescribedList(b, descRejected, []any{optErr(s.Error)}, depth)
}

func (*Released) appendAMQP(b []byte, depth int) ([]byte, error) {
	return appendDescribedList(b, descReleased, nil, depth)
}

func (s *Modified) appendAMQP(b []byte, depth int) ([]byte, error) {
	return appendDescribedList(b, descModified, []any{s.DeliveryFailed, s.UndeliverableHere, optFields(s.MessageAnnotations)}, depth)
}

// ---- decoding ----

// DecodePerformative decodes the performative at the start of a frame body.
// For a transfer the rest of the body becomes Transfer.Payload (sharing
// body's memory). Errors wrap [ErrDecode]: unknown descriptors, fields of the
// wrong type, missing mandatory fields.
func DecodePerformative(body []byte) (Performative, error) {
	v, n, err := Decode(body)
	if err != nil {
		return nil, err
	}
	d, ok := v.(Described)
	if !ok {
		return nil, fmt.Errorf("%w: frame body is a %s, want a described performative", ErrDecode, describe(v))
	}
	code := descriptorCode(d.Descriptor)
	l, err := fieldsOf(d, code)
	if err != nil {
		return nil, err
	}
	var p Performative
	switch code {
	case descOpen:
		p, err = decodeOpen(l)
	case descBegin:
		p, err = decodeBegin(l)
	case descAttach:
		p, err = decodeAttach(l)
	case descFlow:
		p, err = decodeFlow(l)
	case descTransfer:
		var t *Transfer
		t, err = decodeTransfer(l)
		if t != nil {
			t.Payload = body[n:]
		}
		p = t
	case descDisposition:
		p, err = decodeDisposition(l)
	case descDetach:
		p, err = decodeDetach(l)
	case descEnd:
		var e *Error
		e, err = l.errorField(0)
		p = &End{Error: e}
	case descClose:
		var e *Error
		e, err = l.errorField(0)
		p = &Close{Error: e}
	case descSASLMechanisms:
		var m []Symbol
		m, err = l.symbols(0, true)
		p = &SASLMechanisms{Mechanisms: m}
	case descSASLInit:
		p, err = decodeSASLInit(l)
	case descSASLChallenge:
		var c []byte
		c, err = l.binary(0, true)
		p = &SASLChallenge{Challenge: c}
	case descSASLResponse:
		var r []byte
		r, err = l.binary(0, true)
		p = &SASLResponse{Response: r}
	case descSASLOutcome:
		var c uint8
		var data []byte
		c, _, err = l.ubyte(0, true)
		if err == nil {
			data, err = l.binary(1, false)
		}
		p = &SASLOutcome{Code: SASLCode(c), AdditionalData: data}
	default:
		return nil, fmt.Errorf("%w: unknown performative descriptor %v", ErrDecode, d.Descriptor)
	}
	if err != nil {
		return nil, err
	}
	if n != len(body) {
		if _, isTransfer := p.(*Transfer); !isTransfer {
			return nil, fmt.Errorf("%w: %d bytes after the performative", ErrDecode, len(body)-n)
		}
	}
	return p, nil
}

// fields is the field list of a described composite, with typed accessors.
type fields struct {
	name string
	f    []any
}

func fieldsOf(d Described, code uint64) (fields, error) {
	name, ok := descriptorNames[code]
	if !ok {
		name = fmt.Sprintf("descriptor 0x%02x", code)
	}
	switch v := d.Value.(type) {
	case []any:
		return fields{name: name, f: v}, nil
	case nil:
		return fields{name: name}, nil
	}
	return fields{}, fmt.Errorf("%w: %s holds a %s, want a list", ErrDecode, name, describe(d.Value))
}

func (l fields) get(i int) any {
	if i < len(l.f) {
		return l.f[i]
	}
	return nil
}

func (l fields) errf(i int, format string, args ...any) error {
	return fmt.Errorf("%w: %s field %d: %s", ErrDecode, l.name, i, fmt.Sprintf(format, args...))
}

func (l fields) missing(i int, mandatory bool) error {
	if mandatory {
		return l.errf(i, "mandatory field absent")
	}
	return nil
}

// unsigned reads an unsigned integer field of any width up to max.
func (l fields) unsigned(i int, maxVal uint64, mandatory bool) (uint64, bool, error) {
	var u uint64
	switch v := l.get(i).(type) {
	case nil:
		return 0, false, l.missing(i, mandatory)
	case uint8:
		u = uint64(v)
	case uint16:
		u = uint64(v)
	case uint32:
		u = uint64(v)
	case uint64:
		u = v
	default:
		return 0, false, l.errf(i, "got %s, want an unsigned integer", describe(v))
	}
	if u > maxVal {
		return 0, false, l.errf(i, "value %d above %d", u, maxVal)
	}
	return u, true, nil
}

func (l fields) uint32(i int, mandatory bool) (uint32, bool, error) {
	u, ok, err := l.unsigned(i, math.MaxUint32, mandatory)
	return uint32(u), ok, err
}

func (l fields) optUint32(i int) (*uint32, error) {
	u, ok, err := l.uint32(i, false)
	if !ok || err != nil {
		return nil, err
	}
	return &u, nil
}

func (l fields) ubyte(i int, mandatory bool) (uint8, bool, error) {
	u, ok, err := l.unsigned(i, math.MaxUint8, mandatory)
	return uint8(u), ok, err
}

func (l fields) boolean(i int) (bool, error) {
	switch v := l.get(i).(type) {
	case nil:
		return false, nil
	case bool:
		return v, nil
	default:
		return false, l.errf(i, "got %s, want a boolean", describe(v))
	}
}

func (l fields) str(i int, mandatory bool) (string, error) {
	switch v := l.get(i).(type) {
	case nil:
		return "", l.missing(i, mandatory)
	case string:
		return v, nil
	case Symbol:
		return string(v), nil
	default:
		return "", l.errf(i, "got %s, want a string", describe(v))
	}
}

func (l fields) symbol(i int, mandatory bool) (Symbol, error) {
	s, err := l.str(i, mandatory)
	return Symbol(s), err
}

// symbols reads a multiple=true symbol field: a single symbol or an array.
func (l fields) symbols(i int, mandatory bool) ([]Symbol, error) {
	switch v := l.get(i).(type) {
	case nil:
		return nil, l.missing(i, mandatory)
	case Symbol:
		return []Symbol{v}, nil
	case []Symbol:
		return v, nil
	case Array:
		if len(v) == 0 {
			return []Symbol{}, nil
		}
	}
	return nil, l.errf(i, "got %s, want symbols", describe(l.get(i)))
}

func (l fields) binary(i int, mandatory bool) ([]byte, error) {
	switch v := l.get(i).(type) {
	case nil:
		return nil, l.missing(i, mandatory)
	case []byte:
		return v, nil
	default:
		return nil, l.errf(i, "got %s, want binary", describe(v))
	}
}

func (l fields) fieldsMap(i int) (map[string]any, error) {
	switch v := l.get(i).(type) {
	case nil:
		return nil, nil
	case Map:
		m, err := v.Fields()
		if err != nil {
			return nil, l.errf(i, "%v", err)
		}
		return m, nil
	default:
		return nil, l.errf(i, "got %s, want a map", describe(v))
	}
}

func (l fields) described(i int) (Described, uint64, bool, error) {
	switch v := l.get(i).(type) {
	case nil:
		return Described{}, 0, false, nil
	case Described:
		return v, descriptorCode(v.Descriptor), true, nil
	default:
		return Described{}, 0, false, l.errf(i, "got %s, want a described value", describe(v))
	}
}

func (l fields) errorField(i int) (*Error, error) {
	d, code, ok, err := l.described(i)
	if !ok || err != nil {
		return nil, err
	}
	if code != descError {
		return nil, l.errf(i, "descriptor %v, want amqp:error:list", d.Descriptor)
	}
	return decodeError(d)
}

func decodeError(d Described) (*Error, error) {
	l, err := fieldsOf(d, descError)
	if err != nil {
		return nil, err
	}
	cond, err := l.symbol(0, true)
	if err != nil {
		return nil, err
	}
	desc, err := l.str(1, false)
	if err != nil {
		return nil, err
	}
	info, err := l.fieldsMap(2)
	if err != nil {
		return nil, err
	}
	return &Error{Condition: cond, Description: desc, Info: info}, nil
}

func (l fields) deliveryState(i int) (DeliveryState, error) {
	d, code, ok, err := l.described(i)
	if !ok || err != nil {
		return nil, err
	}
	s, err := decodeDeliveryState(d, code)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func decodeDeliveryState(d Described, code uint64) (DeliveryState, error) {
	l, err := fieldsOf(d, code)
	if err != nil {
		return nil, err
	}
	switch code {
	case descReceived:
		sn, _, err := l.uint32(0, true)
		if err != nil {
			return nil, err
		}
		so, _, err := l.unsigned(1, math.MaxUint64, true)
		if err != nil {
			return nil, err
		}
		return &Received{SectionNumber: sn, SectionOffset: so}, nil
	case descAccepted:
		return &Accepted{}, nil
	case descRejected:
		e, err := l.errorField(0)
		if err != nil {
			return nil, err
		}
		return &Rejected{Error: e}, nil
	case descReleased:
		return &Released{}, nil
	case descModified:
		df, err := l.boolean(0)
		if err != nil {
			return nil, err
		}
		uh, err := l.boolean(1)
		if err != nil {
			return nil, err
		}
		ma, err := l.fieldsMap(2)
		if err != nil {
			return nil, err
		}
		return &Modified{DeliveryFailed: df, UndeliverableHere: uh, MessageAnnotations: ma}, nil
	}
	return nil, fmt.Errorf("%w: unsupported delivery state %v", ErrDecode, d.Descriptor)
}

func decodeOpen(l fields) (*Open, error) {
	var p Open
	var err error
	if p.ContainerID, err = l.str(0, true); err != nil {
		return nil, err
	}
	if p.Hostname, err = l.str(1, false); err != nil {
		return nil, err
	}
	mfs, ok, err := l.uint32(2, false)
	if err != nil {
		return nil, err
	}
	p.MaxFrameSize = math.MaxUint32
	if ok {
		p.MaxFrameSize = mfs
	}
	cm, ok, err := l.unsigned(3, math.MaxUint16, false)
	if err != nil {
		return nil, err
	}
	p.ChannelMax = math.MaxUint16
	if ok {
		p.ChannelMax = uint16(cm)
	}
	if p.IdleTimeout, _, err = l.uint32(4, false); err != nil {
		return nil, err
	}
	if p.OutgoingLocales, err = l.symbols(5, false); err != nil {
		return nil, err
	}
	if p.IncomingLocales, err = l.symbols(6, false); err != nil {
		return nil, err
	}
	if p.OfferedCapabilities, err = l.symbols(7, false); err != nil {
		return nil, err
	}
	if p.DesiredCapabilities, err = l.symbols(8, false); err != nil {
		return nil, err
	}
	if p.Properties, err = l.fieldsMap(9); err != nil {
		return nil, err
	}
	return &p, nil
}

func decodeBegin(l fields) (*Begin, error) {
	var p Begin
	rc, ok, err := l.unsigned(0, math.MaxUint16, false)
	if err != nil {
		return nil, err
	}
	if ok {
		c := uint16(rc)
		p.RemoteChannel = &c
	}
	if p.NextOutgoingID, _, err = l.uint32(1, true); err != nil {
		return nil, err
	}
	if p.IncomingWindow, _, err = l.uint32(2, true); err != nil {
		return nil, err
	}
	if p.OutgoingWindow, _, err = l.uint32(3, true); err != nil {
		return nil, err
	}
	hm, ok, err := l.uint32(4, false)
	if err != nil {
		return nil, err
	}
	p.HandleMax = math.MaxUint32
	if ok {
		p.HandleMax = hm
	}
	if p.OfferedCapabilities, err = l.symbols(5, false); err != nil {
		return nil, err
	}
	if p.DesiredCapabilities, err = l.symbols(6, false); err != nil {
		return nil, err
	}
	if p.Properties, err = l.fieldsMap(7); err != nil {
		return nil, err
	}
	return &p, nil
}

func decodeAttach(l fields) (*Attach, error) {
	var p Attach
	var err error
	if p.Name, err = l.str(0, true); err != nil {
		return nil, err
	}
	if p.Handle, _, err = l.uint32(1, true); err != nil {
		return nil, err
	}
	if l.get(2) == nil {
		return nil, l.errf(2, "mandatory role absent")
	}
	role, err := l.boolean(2)
	if err != nil {
		return nil, err
	}
	p.Role = Role(role)
	ssm, ok, err := l.ubyte(3, false)
	if err != nil {
		return nil, err
	}
	p.SndSettleMode = SenderSettleModeMixed
	if ok {
		if ssm > 2 {
			return nil, l.errf(3, "snd-settle-mode %d", ssm)
		}
		p.SndSettleMode = SenderSettleMode(ssm)
	}
	rsm, _, err := l.ubyte(4, false)
	if err != nil {
		return nil, err
	}
	if rsm > 1 {
		return nil, l.errf(4, "rcv-settle-mode %d", rsm)
	}
	p.RcvSettleMode = ReceiverSettleMode(rsm)
	if d, code, ok, err := l.described(5); err != nil {
		return nil, err
	} else if ok {
		if code != descSource {
			return nil, l.errf(5, "source descriptor %v not supported", d.Descriptor)
		}
		if p.Source, err = decodeSource(d); err != nil {
			return nil, err
		}
	}
	if d, code, ok, err := l.described(6); err != nil {
		return nil, err
	} else if ok {
		if code != descTarget {
			return nil, l.errf(6, "target descriptor %v not supported", d.Descriptor)
		}
		if p.Target, err = decodeTarget(d); err != nil {
			return nil, err
		}
	}
	switch v := l.get(7).(type) {
	case nil:
	case Map:
		p.Unsettled = v
	default:
		return nil, l.errf(7, "got %s, want a map", describe(v))
	}
	if p.IncompleteUnsettled, err = l.boolean(8); err != nil {
		return nil, err
	}
	if p.InitialDeliveryCount, err = l.optUint32(9); err != nil {
		return nil, err
	}
	if p.MaxMessageSize, _, err = l.unsigned(10, math.MaxUint64, false); err != nil {
		return nil, err
	}
	if p.OfferedCapabilities, err = l.symbols(11, false); err != nil {
		return nil, err
	}
	if p.DesiredCapabilities, err = l.symbols(12, false); err != nil {
		return nil, err
	}
	if p.Properties, err = l.fieldsMap(13); err != nil {
		return nil, err
	}
	return &p, nil
}

func decodeSource(d Described) (*Source, error) {
	l, err := fieldsOf(d, descSource)
	if err != nil {
		return nil, err
	}
	var s Source
	if s.Address, err = l.str(0, false); err != nil {
		return nil, err
	}
	if s.Durable, _, err = l.uint32(1, false); err != nil {
		return nil, err
	}
	if s.ExpiryPolicy, err = l.symbol(2, false); err != nil {
		return nil, err
	}
	if s.Timeout, _, err = l.uint32(3, false); err != nil {
		return nil, err
	}
	if s.Dynamic, err = l.boolean(4); err != nil {
		return nil, err
	}
	if s.DynamicNodeProperties, err = l.fieldsMap(5); err != nil {
		return nil, err
	}
	if s.DistributionMode, err = l.symbol(6, false); err != nil {
		return nil, err
	}
	switch v := l.get(7).(type) {
	case nil:
	case Map:
		s.Filter = v
	default:
		return nil, l.errf(7, "got %s, want a filter map", describe(v))
	}
	s.DefaultOutcome = l.get(8)
	if s.Outcomes, err = l.symbols(9, false); err != nil {
		return nil, err
	}
	if s.Capabilities, err = l.symbols(10, false); err != nil {
		return nil, err
	}
	return &s, nil
}

func decodeTarget(d Described) (*Target, error) {
	l, err := fieldsOf(d, descTarget)
	if err != nil {
		return nil, err
	}
	var t Target
	if t.Address, err = l.str(0, false); err != nil {
		return nil, err
	}
	if t.Durable, _, err = l.uint32(1, false); err != nil {
		return nil, err
	}
	if t.ExpiryPolicy, err = l.symbol(2, false); err != nil {
		return nil, err
	}
	if t.Timeout, _, err = l.uint32(3, false); err != nil {
		return nil, err
	}
	if t.Dynamic, err = l.boolean(4); err != nil {
		return nil, err
	}
	if t.DynamicNodeProperties, err = l.fieldsMap(5); err != nil {
		return nil, err
	}
	if t.Capabilities, err = l.symbols(6, false); err != nil {
		return nil, err
	}
	return &t, nil
}

func decodeFlow(l fields) (*Flow, error) {
	var p Flow
	var err error
	if p.NextIncomingID, err = l.optUint32(0); err != nil {
		return nil, err
	}
	if p.IncomingWindow, _, err = l.uint32(1, true); err != nil {
		return nil, err
	}
	if p.NextOutgoingID, _, err = l.uint32(2, true); err != nil {
		return nil, err
	}
	if p.OutgoingWindow, _, err = l.uint32(3, true); err != nil {
		return nil, err
	}
	if p.Handle, err = l.optUint32(4); err != nil {
		return nil, err
	}
	if p.DeliveryCount, err = l.optUint32(5); err != nil {
		return nil, err
	}
	if p.LinkCredit, err = l.optUint32(6); err != nil {
		return nil, err
	}
	if p.Available, err = l.optUint32(7); err != nil {
		return nil, err
	}
	if p.Drain, err = l.boolean(8); err != nil {
		return nil, err
	}
	if p.Echo, err = l.boolean(9); err != nil {
		return nil, err
	}
	if p.Properties, err = l.fieldsMap(10); err != nil {
		return nil, err
	}
	return &p, nil
}

func decodeTransfer(l fields) (*Transfer, error) {
	var p Transfer
	var err error
	if p.Handle, _, err = l.uint32(0, true); err != nil {
		return nil, err
	}
	if p.DeliveryID, err = l.optUint32(1); err != nil {
		return nil, err
	}
	if p.DeliveryTag, err = l.binary(2, false); err != nil {
		return nil, err
	}
	if p.MessageFormat, err = l.optUint32(3); err != nil {
		return nil, err
	}
	if p.Settled, err = l.boolean(4); err != nil {
		return nil, err
	}
	if p.More, err = l.boolean(5); err != nil {
		return nil, err
	}
	rsm, ok, err := l.ubyte(6, false)
	if err != nil {
		return nil, err
	}
	if ok {
		if rsm > 1 {
			return nil, l.errf(6, "rcv-settle-mode %d", rsm)
		}
		m := ReceiverSettleMode(rsm)
		p.RcvSettleMode = &m
	}
	if p.State, err = l.deliveryState(7); err != nil {
		return nil, err
	}
	if p.Resume, err = l.boolean(8); err != nil {
		return nil, err
	}
	if p.Aborted, err = l.boolean(9); err != nil {
		return nil, err
	}
	if p.Batchable, err = l.boolean(10); err != nil {
		return nil, err
	}
	return &p, nil
}

func decodeDisposition(l fields) (*Disposition, error) {
	var p Disposition
	if l.get(0) == nil {
		return nil, l.errf(0, "mandatory role absent")
	}
	role, err := l.boolean(0)
	if err != nil {
		return nil, err
	}
	p.Role = Role(role)
	if p.First, _, err = l.uint32(1, true); err != nil {
		return nil, err
	}
	if p.Last, err = l.optUint32(2); err != nil {
		return nil, err
	}
	if p.Settled, err = l.boolean(3); err != nil {
		return nil, err
	}
	if p.State, err = l.deliveryState(4); err != nil {
		return nil, err
	}
	if p.Batchable, err = l.boolean(5); err != nil {
		return nil, err
	}
	return &p, nil
}

func decodeDetach(l fields) (*Detach, error) {
	var p Detach
	var err error
	if p.Handle, _, err = l.uint32(0, true); err != nil {
		return nil, err
	}
	if p.Closed, err = l.boolean(1); err != nil {
		return nil, err
	}
	if p.Error, err = l.errorField(2); err != nil {
		return nil, err
	}
	return &p, nil
}

func decodeSASLInit(l fields) (*SASLInit, error) {
	var p SASLInit
	var err error
	if p.Mechanism, err = l.symbol(0, true); err != nil {
		return nil, err
	}
	if p.InitialResponse, err = l.binary(1, false); err != nil {
		return nil, err
	}
	if p.Hostname, err = l.str(2, false); err != nil {
		return nil, err
	}
	return &p, nil
}
