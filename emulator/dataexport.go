package emulator

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/export"
	"github.com/iotc-go/iotc/emulator/internal/restapi"
)

// DataExportAPIVersion is the api-version of IoT Central's data-plane API
// that defines the data export routes the emulator serves
// (/api/dataExport/destinations and /api/dataExport/exports);
// 2022-06-30-preview is accepted too. The rest of the REST API is served
// at api-version 2022-07-31, which has no data export.
const DataExportAPIVersion = export.APIVersion

// DataExportOptions configure IoT Central data export: destinations
// (webhook@v1, eventhubs@v1) that receive, in IoT Central's export
// format, what exports select from the telemetry, property changes,
// device connectivity, device lifecycle and device template lifecycle.
// Definitions are kept like the other application data (DataDir keeps
// them). See docs/emulator.md.
type DataExportOptions struct {
	// Disabled turns data export off: nothing is observed and the
	// dataExport routes answer 501. Default false.
	Disabled bool
	// Definitions, when set, is a JSON object
	// {"destinations": {"<id>": {...}}, "exports": {"<id>": {...}}} whose
	// members have the shapes of the data export API's PUT bodies; each
	// is created or replaced at start, destinations first. Start fails
	// (ErrInvalid) naming a definition the API would refuse.
	Definitions []byte
	// RetryInitial is the wait after a first failed delivery (default 1 s);
	// it doubles after each failure up to RetryMax (default 1 min). A
	// destination retries its oldest message until it is delivered, keeping
	// the order; it holds up to 10,000 messages, then drops the oldest.
	RetryInitial, RetryMax time.Duration
	// ApplicationID is the applicationId of exported messages; "" derives
	// a stable UUID from the ID scope.
	ApplicationID string
}

// definitionsFile is the shape of DataExportOptions.Definitions.
type definitionsFile struct {
	Destinations map[string]json.RawMessage `json:"destinations"`
	Exports      map[string]json.RawMessage `json:"exports"`
}

// startDataExport starts the export over the core (before any front-end
// accepts a device) and applies the configured definitions.
func (e *Emulator) startDataExport() error {
	o := e.cfg.dataExport
	if o.Disabled {
		return nil
	}
	m, err := export.New(e.core, export.Options{
		ApplicationID: o.ApplicationID, RetryInitial: o.RetryInitial, RetryMax: o.RetryMax,
		// Event Hubs destinations may be the emulator's own endpoint.
		TLSConfig: &tls.Config{RootCAs: e.caPool, MinVersion: tls.VersionTLS12},
		Logger:    e.log.With("component", "export"),
	})
	if err != nil {
		return fmt.Errorf("emulator: data export: %w", err)
	}
	e.export = m
	if len(o.Definitions) == 0 {
		return nil
	}
	var defs definitionsFile
	dec := json.NewDecoder(bytes.NewReader(o.Definitions))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&defs); err != nil {
		return fmt.Errorf("%w: data export definitions: %v", ErrInvalid, err)
	}
	for _, id := range slices.Sorted(maps.Keys(defs.Destinations)) {
		var d export.Destination
		if err := json.Unmarshal(defs.Destinations[id], &d); err != nil {
			return fmt.Errorf("%w: data export destination %q: %v", ErrInvalid, id, err)
		}
		d.ID = id
		if _, err := m.PutDestination(d); err != nil {
			return fmt.Errorf("%w: data export destination %q: %v", ErrInvalid, id, err)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(defs.Exports)) {
		var x export.Export
		if err := json.Unmarshal(defs.Exports[id], &x); err != nil {
			return fmt.Errorf("%w: data export %q: %v", ErrInvalid, id, err)
		}
		x.ID = id
		if _, err := m.PutExport(x); err != nil {
			return fmt.Errorf("%w: data export %q: %v", ErrInvalid, id, err)
		}
	}
	return nil
}

// dataExportBackend is the REST API's view of the export (nil when off).
func (e *Emulator) dataExportBackend() restapi.DataExportBackend {
	if e.export == nil {
		return nil
	}
	return e.export
}
