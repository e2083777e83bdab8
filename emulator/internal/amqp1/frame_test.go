package amqp1

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
)

func TestFrameRoundTripAndLimits(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	if err := WriteFrame(&buf, FrameTypeSASL, 7, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	f, err := ReadFrame(&buf, 512)
	if err != nil {
		t.Fatal(err)
	}
	if f.Type != FrameTypeSASL || f.Channel != 7 || !bytes.Equal(f.Body, []byte{1, 2, 3}) {
		t.Errorf("got %+v", f)
	}

	// Extended header (doff 3) is skipped.
	ext := []byte{0, 0, 0, 14, 3, 0, 0, 1, 0xee, 0xee, 0xee, 0xee, 9, 8}
	f, err = ReadFrame(bytes.NewReader(ext), 512)
	if err != nil || !bytes.Equal(f.Body, []byte{9, 8}) || f.Channel != 1 {
		t.Errorf("extended header: %+v, %v", f, err)
	}

	// Empty frame (heartbeat).
	f, err = ReadFrame(bytes.NewReader([]byte{0, 0, 0, 8, 2, 0, 0, 0}), 512)
	if err != nil || len(f.Body) != 0 {
		t.Errorf("empty frame: %+v, %v", f, err)
	}

	bad := map[string][]byte{
		"size below header": {0, 0, 0, 7, 2, 0, 0, 0},
		"doff below 2":      {0, 0, 0, 8, 1, 0, 0, 0},
		"doff past frame":   {0, 0, 0, 8, 3, 0, 0, 0},
	}
	for name, in := range bad {
		if _, err := ReadFrame(bytes.NewReader(in), 512); !errors.Is(err, ErrFraming) {
			t.Errorf("%s: err = %v, want ErrFraming", name, err)
		}
	}
	// Too large: rejected from the header alone, before reading the body.
	if _, err := ReadFrame(bytes.NewReader([]byte{0, 1, 0, 0, 2, 0, 0, 0}), 1024); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("too large: err = %v", err)
	}
	if _, err := ReadFrame(bytes.NewReader([]byte{0, 0, 0, 20, 2, 0, 0, 0, 1}), 1024); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated: err = %v", err)
	}
	if _, err := ReadFrame(bytes.NewReader(nil), 1024); !errors.Is(err, io.EOF) {
		t.Errorf("clean EOF: err = %v", err)
	}
}

func u32(v uint32) *uint32 { return &v }

func TestPerformativeRoundTrip(t *testing.T) {
	t.Parallel()
	rc := uint16(3)
	rsm := ReceiverSettleModeSecond
	perfs := []Performative{
		&Open{ContainerID: "c", Hostname: "h", MaxFrameSize: 65536, ChannelMax: 9, IdleTimeout: 1000,
			OfferedCapabilities: []Symbol{"x"}, Properties: map[string]any{"p": "v"}},
		&Begin{RemoteChannel: &rc, NextOutgoingID: 1, IncomingWindow: 2, OutgoingWindow: 3, HandleMax: 4},
		&Attach{Name: "n", Handle: 1, Role: RoleReceiver, SndSettleMode: SenderSettleModeSettled,
			RcvSettleMode: ReceiverSettleModeFirst,
			Source: &Source{Address: "/devices/d/twin", Filter: Map{{Symbol("f"), Described{Symbol("f:x"), "v"}}},
				Outcomes: []Symbol{"amqp:accepted:list"}, Capabilities: []Symbol{"c"}},
			Target:               &Target{Address: "t", Durable: 1, ExpiryPolicy: "never", Timeout: 5, Capabilities: []Symbol{"x"}},
			InitialDeliveryCount: u32(0), MaxMessageSize: 1 << 20, DesiredCapabilities: []Symbol{"d"},
			Properties: map[string]any{"com.microsoft:channel-correlation-id": "twin:1"}},
		&Flow{NextIncomingID: u32(1), IncomingWindow: 2, NextOutgoingID: 3, OutgoingWindow: 4,
			Handle: u32(5), DeliveryCount: u32(6), LinkCredit: u32(7), Available: u32(8), Drain: true, Echo: true},
		&Flow{IncomingWindow: 2, NextOutgoingID: 3, OutgoingWindow: 4},
		&Transfer{Handle: 1, DeliveryID: u32(2), DeliveryTag: []byte{3}, MessageFormat: u32(0), Settled: true,
			More: true, RcvSettleMode: &rsm, State: &Received{SectionNumber: 1, SectionOffset: 2}, Payload: []byte{}},
		&Disposition{Role: RoleReceiver, First: 1, Last: u32(4), Settled: true,
			State: &Rejected{Error: &Error{Condition: ErrCondNotFound, Description: "d", Info: map[string]any{"k": int32(1)}}}},
		&Disposition{Role: RoleSender, First: 1, State: &Modified{DeliveryFailed: true, MessageAnnotations: map[string]any{"a": "b"}}},
		&Disposition{Role: RoleReceiver, First: 1, State: &Accepted{}},
		&Disposition{Role: RoleReceiver, First: 1, State: &Released{}},
		&Detach{Handle: 1, Closed: true, Error: &Error{Condition: ErrCondUnauthorizedAccess}},
		&End{Error: &Error{Condition: ErrCondWindowViolation}},
		&End{},
		&Close{},
		&SASLMechanisms{Mechanisms: []Symbol{"PLAIN", "ANONYMOUS"}},
		&SASLInit{Mechanism: "PLAIN", InitialResponse: []byte("\x00u\x00p"), Hostname: "h"},
		&SASLChallenge{Challenge: []byte{1}},
		&SASLResponse{Response: []byte{2}},
		&SASLOutcome{Code: SASLCodeAuth, AdditionalData: []byte{3}},
	}
	for _, p := range perfs {
		b, err := Encode(p)
		if err != nil {
			t.Fatalf("Encode(%T): %v", p, err)
		}
		got, err := DecodePerformative(b)
		if err != nil {
			t.Fatalf("DecodePerformative(%T): %v", p, err)
		}
		if !reflect.DeepEqual(got, p) {
			t.Errorf("round trip %T:\n got %#v\nwant %#v", p, got, p)
		}
	}
}

func TestTransferPayloadAndDefaults(t *testing.T) {
	t.Parallel()
	b, err := Encode(&Transfer{Handle: 9})
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, 0xde, 0xad)
	p, err := DecodePerformative(b)
	if err != nil {
		t.Fatal(err)
	}
	if tr := p.(*Transfer); !bytes.Equal(tr.Payload, []byte{0xde, 0xad}) || tr.Handle != 9 {
		t.Errorf("got %+v", tr)
	}
	// An open with only the container-id gets the specification defaults,
	// and the symbolic descriptor form is understood.
	open := []byte{0x00, 0xa3, 14}
	open = append(open, "amqp:open:list"...)
	open = append(open, 0xc0, 4, 1, 0xa1, 1, 'c')
	p, err = DecodePerformative(open)
	if err != nil {
		t.Fatal(err)
	}
	if o := p.(*Open); o.ContainerID != "c" || o.MaxFrameSize != 1<<32-1 || o.ChannelMax != 65535 {
		t.Errorf("defaults: %+v", o)
	}
	// An attach with no snd-settle-mode gets mixed; a single symbol is a one-element array.
	a, _ := Encode(Described{descAttach, []any{"n", uint32(0), false, nil, nil, nil, nil, nil, nil, uint32(0), nil, Symbol("one")}})
	p, err = DecodePerformative(a)
	if err != nil {
		t.Fatal(err)
	}
	if at := p.(*Attach); at.SndSettleMode != SenderSettleModeMixed || !reflect.DeepEqual(at.OfferedCapabilities, []Symbol{"one"}) {
		t.Errorf("attach defaults: %+v", at)
	}
}

func TestDecodePerformativeRejects(t *testing.T) {
	t.Parallel()
	enc := func(v any) []byte {
		b, err := Encode(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	bad := map[string][]byte{
		"not described":      enc([]any{}),
		"unknown descriptor": enc(Described{uint64(0x99), []any{}}),
		"open no container":  enc(Described{descOpen, []any{}}),
		"attach no role":     enc(Described{descAttach, []any{"n", uint32(1)}}),
		"attach wrong type":  enc(Described{descAttach, []any{"n", "handle", true}}),
		"begin no windows":   enc(Described{descBegin, []any{nil, uint32(1)}}),
		"channel-max 70000":  enc(Described{descOpen, []any{"c", nil, nil, uint32(70000)}}),
		"trailing bytes":     append(enc(&Close{}), 0x40),
		"bad state":          enc(Described{descDisposition, []any{true, uint32(1), nil, true, Described{uint64(0x99), []any{}}}}),
		"value not list":     enc(Described{descClose, "x"}),
	}
	for name, in := range bad {
		if _, err := DecodePerformative(in); !errors.Is(err, ErrDecode) {
			t.Errorf("%s: err = %v, want ErrDecode", name, err)
		}
	}
}
