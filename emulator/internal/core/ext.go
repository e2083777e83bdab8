package core

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// extState holds the operator-side state the REST API adds to the model:
// device templates, per-device settings set through the API and the
// command history. It lives in Core.ext and is guarded by Core.mu. Its maps
// are made on first use, so a zero extState is ready.
type extState struct {
	templates  map[string]*storedTemplate     // by template id
	settings   map[string]*deviceSettings     // by device id
	commands   map[string][]CommandRecord     // by device id, oldest first
	verifying  map[string]map[string][]string // group id -> entry -> verification codes issued
	verified   map[string]map[string]bool     // group id -> certificate thumbprint -> proven
	commandSeq int64                          // the last CommandRecord.seq given
	apiTokens  map[string]APIToken            // by token id (see apitokens.go)
	appDocs    map[string]map[string][]byte   // collection -> id -> JSON (see appdocs.go)
	// moduleCommands are the module commands run through
	// InvokeModuleCommand, by module incarnation (see moduleHistoryKey),
	// oldest first; in memory only.
	moduleCommands map[string][]CommandRecord
}

// deviceSettings are the device fields only the REST API sets.
type deviceSettings struct {
	template      string // assigned template id; "" means the model id decides
	simulated     bool
	organizations []string
}

func (x *extState) settingsOf(id string) *deviceSettings {
	if x.settings == nil {
		x.settings = map[string]*deviceSettings{}
	}
	s := x.settings[id]
	if s == nil {
		s = &deviceSettings{}
		x.settings[id] = s
	}
	return s
}

// MaxCommandHistory is how many invocations per device, component and
// command the history keeps (the newest ones).
const MaxCommandHistory = 10

// CommandRecord is one finished command invocation, as the REST API shows
// it in the command history.
type CommandRecord struct {
	// ID is the request id given to the invocation.
	ID string
	// Component is "" for the root component.
	Component string
	// Name is the command name.
	Name string
	// Request is the payload sent (nil when none).
	Request json.RawMessage
	// Response is the device's payload (nil when none).
	Response json.RawMessage
	// ResponseCode is the status the device answered with.
	ResponseCode int
	// ConnectionTimeout and ResponseTimeout are the timeouts applied, in seconds.
	ConnectionTimeout, ResponseTimeout int
	// Time is when the invocation finished.
	Time time.Time

	seq int64 // numbers the device's records in the store
}

// RecordCommand adds a finished invocation to the device's command
// history, keeping the newest MaxCommandHistory per component and command.
// It returns ErrNotFound for an unknown device.
func (c *Core) RecordCommand(id string, rec CommandRecord) error {
	staged, err := c.recordCommand(id, rec)
	if err != nil {
		return err
	}
	return awaitNow(staged)
}

func (c *Core) recordCommand(id string, rec CommandRecord) (<-chan error, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.lookup(id); err != nil {
		return nil, err
	}
	c.ext.commandSeq++
	rec.seq = c.ext.commandSeq
	var changes []Change
	if c.durable() {
		doc, err := json.Marshal(rec)
		if err != nil {
			return nil, fmt.Errorf("%w: command record: %v", ErrInvalid, err)
		}
		changes = append(changes, Change{Op: OpPut, Record: Record{Kind: KindCommand, Device: id, Seq: rec.seq, Doc: doc}})
	}
	if rec.Time.IsZero() {
		rec.Time = c.now()
	}
	if c.ext.commands == nil {
		c.ext.commands = map[string][]CommandRecord{}
	}
	hist := append(c.ext.commands[id], rec)
	same := func(r CommandRecord) bool { return r.Component == rec.Component && r.Name == rec.Name }
	n := 0
	for _, r := range hist {
		if same(r) {
			n++
		}
	}
	for i := 0; n > MaxCommandHistory && i < len(hist); {
		if same(hist[i]) {
			changes = append(changes, Change{Op: OpDelete, Record: Record{Kind: KindCommand, Device: id, Seq: hist[i].seq}})
			hist = slices.Delete(hist, i, i+1)
			n--
			continue
		}
		i++
	}
	c.ext.commands[id] = hist
	return c.stageLocked(changes...), nil
}

// CommandHistory returns the kept invocations of one command of a device
// (component "" for the root), oldest first. It returns ErrNotFound for an
// unknown device; a command never run gives an empty list.
func (c *Core) CommandHistory(id, component, name string) ([]CommandRecord, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.lookup(id); err != nil {
		return nil, err
	}
	var out []CommandRecord
	for _, r := range c.ext.commands[id] {
		if r.Component == component && r.Name == name {
			r.Request, r.Response = slices.Clone(r.Request), slices.Clone(r.Response)
			out = append(out, r)
		}
	}
	return out, nil
}

// errNoDevice formats an unknown-device error.
func errNoDevice(id string) error { return fmt.Errorf("%w: device %q", ErrNotFound, id) }
