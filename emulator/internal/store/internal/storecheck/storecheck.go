// Package storecheck holds what the store adapters share: the validation of
// the changes given to core.Store.Apply, the order in which Load returns the
// kinds, and the errors both adapters report.
package storecheck

import (
	"encoding/json"
	"fmt"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// Error is an error of the store adapters: its text does not repeat
// core.ErrStore's, yet errors.Is matches it with core.ErrStore too.
type Error string

// Error returns e's text.
func (e Error) Error() string { return string(e) }

// Is reports whether target is core.ErrStore.
func (e Error) Is(target error) bool { return target == core.ErrStore }

// ErrClosed is reported by Apply and Load on a closed store; it matches
// core.ErrStore.
var ErrClosed error = Error("emulator: state store closed")

// ErrInvalid is reported (wrapped with the details, after core.ErrStore)
// by Apply for a change the store cannot keep (an unknown kind or op, an
// identity field missing or set where the kind has none, a document that
// is not JSON); it matches core.ErrStore.
var ErrInvalid error = Error("invalid change")

// Kinds lists every kind in the order Load returns them.
var Kinds = []core.Kind{
	core.KindMeta,
	core.KindGroup,
	core.KindDevice,
	core.KindTemplate,
	core.KindCert,
	core.KindC2D,
	core.KindTelemetry,
	core.KindCommand,
	core.KindEvent,
}

// KnownKind reports whether k is one of Kinds.
func KnownKind(k core.Kind) bool {
	for _, known := range Kinds {
		if k == known {
			return true
		}
	}
	return false
}

// Unit checks every change of one Apply call and returns the first problem
// as an error wrapping core.ErrStore and ErrInvalid, or nil.
func Unit(changes []core.Change) error {
	for i, c := range changes {
		if err := Change(c); err != nil {
			return fmt.Errorf("%w: change %d: %w", core.ErrStore, i, err)
		}
	}
	return nil
}

// validDoc reports whether r's Doc is JSON. A telemetry or event document,
// the ones written per acknowledged message, is only checked to be a JSON object's
// frame ('{' to '}'): the model encodes it with encoding/json, and a full
// scan of every message cost about a tenth of the store's CPU per message.
func validDoc(r core.Record) bool {
	if r.Kind == core.KindTelemetry || r.Kind == core.KindEvent {
		d := r.Doc
		return len(d) >= 2 && d[0] == '{' && d[len(d)-1] == '}'
	}
	return json.Valid(r.Doc)
}

// Change checks one change, see Unit; its error wraps ErrInvalid.
//
// The rules: OpPut needs the record's identity and a JSON Doc; OpDelete the
// identity only (Doc is ignored); OpTrim a sequenced kind and a Device;
// OpDeleteDevice a Key (the device id) and Kind KindDevice or "". The
// identity of a record is a non-empty Key for the unsequenced kinds (Device
// must be ""), Device and Key for KindC2D, Device and Seq for KindTelemetry,
// KindCommand and KindEvent (Key must be "").
func Change(c core.Change) error {
	r := c.Record
	switch c.Op {
	case core.OpPut, core.OpDelete:
		if err := identity(r); err != nil {
			return err
		}
		if c.Op == core.OpPut && !validDoc(r) {
			return fmt.Errorf("%w: %s %s: doc is not JSON", ErrInvalid, r.Kind, name(r))
		}
		return nil
	case core.OpTrim:
		if !r.Kind.Sequenced() {
			return fmt.Errorf("%w: trim of kind %q, which has no sequence", ErrInvalid, r.Kind)
		}
		if r.Device == "" {
			return fmt.Errorf("%w: trim of %s without a device", ErrInvalid, r.Kind)
		}
		return nil
	case core.OpDeleteDevice:
		if r.Kind != "" && r.Kind != core.KindDevice {
			return fmt.Errorf("%w: delete-device with kind %q", ErrInvalid, r.Kind)
		}
		if r.Key == "" {
			return fmt.Errorf("%w: delete-device without a device id in Key", ErrInvalid)
		}
		return nil
	default:
		return fmt.Errorf("%w: unknown op %d", ErrInvalid, c.Op)
	}
}

func identity(r core.Record) error {
	if !KnownKind(r.Kind) {
		return fmt.Errorf("%w: unknown kind %q", ErrInvalid, r.Kind)
	}
	switch r.Kind {
	case core.KindC2D:
		if r.Device == "" || r.Key == "" {
			return fmt.Errorf("%w: c2d record needs Device and Key", ErrInvalid)
		}
	case core.KindTelemetry, core.KindCommand, core.KindEvent:
		if r.Device == "" {
			return fmt.Errorf("%w: %s record needs Device", ErrInvalid, r.Kind)
		}
		if r.Key != "" {
			return fmt.Errorf("%w: %s record has a Key (its identity is Device and Seq)", ErrInvalid, r.Kind)
		}
	default:
		if r.Key == "" {
			return fmt.Errorf("%w: %s record needs Key", ErrInvalid, r.Kind)
		}
		if r.Device != "" {
			return fmt.Errorf("%w: %s record has a Device", ErrInvalid, r.Kind)
		}
	}
	return nil
}

// name is the identity of r in an error message.
func name(r core.Record) string {
	switch r.Kind {
	case core.KindC2D:
		return fmt.Sprintf("%q of device %q", r.Key, r.Device)
	case core.KindTelemetry, core.KindCommand, core.KindEvent:
		return fmt.Sprintf("%d of device %q", r.Seq, r.Device)
	default:
		return fmt.Sprintf("%q", r.Key)
	}
}
