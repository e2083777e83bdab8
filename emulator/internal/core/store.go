package core

import (
	"context"
	"errors"
)

// Store is the port through which the model keeps its state durable. The
// model holds its working state in memory and hands every change it makes
// to the store before it answers the request that made it, so an
// acknowledgement (an MQTT PUBACK, an AMQP accepted disposition, a 2xx
// answer) is given only once the change is durable.
//
// Records are opaque JSON documents to the store: the model encodes and
// decodes them; the store keeps them in order and answers Load.
type Store interface {
	// Load returns every record, each kind in key order and the
	// sequenced kinds (KindC2D, KindTelemetry, KindCommand) in Seq
	// order per device. A new store returns no records. Errors wrap
	// ErrStore.
	Load(ctx context.Context) ([]Record, error)
	// Apply queues changes to be committed as one atomic unit after every
	// change applied before it, and returns a channel that receives nil
	// once they are durable, or an error wrapping ErrStore (the changes
	// are then not applied). It never blocks on the commit itself, so the
	// model may call it while holding its lock to keep the order of its
	// changes; the channel is buffered, so nobody has to read it.
	Apply(changes []Change) <-chan error
	// Stats reports the commits made so far.
	Stats() StoreStats
	// Close commits what was applied, then releases the store; later
	// Apply calls fail with ErrStore.
	Close() error
}

// ErrStore reports a store that cannot load or commit; the model refuses
// the request that needed it (front-ends answer it as an internal error).
var ErrStore = errors.New("emulator: state store failed")

// Kind names a kind of record.
type Kind string

// The kinds of record the model keeps.
const (
	// KindMeta holds settings of the emulator itself (Key "idScope").
	KindMeta Kind = "meta"
	// KindGroup is an enrollment group, Key its id.
	KindGroup Kind = "group"
	// KindDevice is a device with its twin, Key its id.
	KindDevice Kind = "device"
	// KindTemplate is a device template, Key its id.
	KindTemplate Kind = "template"
	// KindCert is a proven enrollment group certificate, Key "group/thumbprint".
	KindCert Kind = "cert"
	// KindC2D is a cloud-to-device message waiting for Device, Key its
	// message id, Seq its place in the queue.
	KindC2D Kind = "c2d"
	// KindTelemetry is a message in Device's telemetry history, Seq its
	// number (Key unused).
	KindTelemetry Kind = "telemetry"
	// KindCommand is a finished command in Device's history, Seq its
	// number (Key unused).
	KindCommand Kind = "command"
	// KindEvent is an event of the Event Hubs-compatible endpoint: Device
	// names its stream ("{entity}/{partition}", or a stream of the
	// endpoint's own settings), Seq its sequence number in the stream
	// (Key unused). Unlike KindTelemetry, Seq is unique per stream only,
	// and OpDeleteDevice leaves events alone (they outlive the device, as
	// in Event Hubs).
	KindEvent Kind = "event"
)

// Sequenced reports whether records of k are ordered per device by Seq.
func (k Kind) Sequenced() bool {
	return k == KindC2D || k == KindTelemetry || k == KindCommand || k == KindEvent
}

// Record is one stored document.
type Record struct {
	// Kind says what it is.
	Kind Kind
	// Device owns the record for KindC2D, KindTelemetry and KindCommand;
	// "" for the other kinds.
	Device string
	// Key identifies the record within its kind (and device); "" for
	// KindTelemetry and KindCommand, which Seq identifies.
	Key string
	// Seq orders the sequenced kinds per device (grows, never reused).
	// For KindTelemetry and KindCommand it is also unique within the
	// kind, across devices (the model numbers them in one sequence), so
	// that a store can append them in Seq order without an index by
	// device; a Seq given to two devices is a model bug whose outcome
	// depends on the store.
	Seq int64
	// Doc is the JSON document.
	Doc []byte
}

// Op is what a Change does.
type Op int

// The operations of a Change.
const (
	// OpPut inserts or replaces the record with the same identity:
	// (Kind, Key) for unsequenced kinds, (Kind, Device, Key) for KindC2D,
	// (Kind, Device, Seq) for KindTelemetry and KindCommand. OpTrim of
	// those kinds may cost a scan of the kind: the model trims them with
	// OpDelete of each record its history drops.
	OpPut Op = iota
	// OpDelete removes the record with the identity of Record (Doc
	// unused); removing what is not there is no error.
	OpDelete
	// OpTrim removes every record of Record.Kind and Record.Device whose
	// Seq is at most Record.Seq (a bounded history dropping its oldest).
	OpTrim
	// OpDeleteDevice removes device Record.Key with every record it owns.
	OpDeleteDevice
)

// Change is one step of an atomic unit given to Store.Apply.
type Change struct {
	Op     Op
	Record Record
}

// StoreStats counts a store's commits: Changes/Commits is the mean group
// size of group commit.
type StoreStats struct {
	// Commits is the number of transactions committed.
	Commits uint64
	// Units is the number of Apply calls committed.
	Units uint64
	// Changes is the number of changes committed.
	Changes uint64
	// MaxUnits is the most Apply calls one transaction carried.
	MaxUnits int
}
