package export

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// APIVersion is the IoT Central data-plane api-version that defines the
// data export routes the emulator serves (dataExport/destinations and
// dataExport/exports); APIVersions lists every version accepted for them.
const APIVersion = "2022-10-31-preview"

// APIVersions are the api-versions whose data export shapes the emulator
// serves (2022-06-30-preview introduced them; 2022-10-31-preview keeps them).
var APIVersions = []string{"2022-06-30-preview", APIVersion}

// Destination types the emulator exports to.
const (
	TypeWebhook   = "webhook@v1"
	TypeEventHubs = "eventhubs@v1"
)

// unservedTypes are IoT Central destination types the emulator refuses.
var unservedTypes = []string{"blobstorage@v1", "dataexplorer@v1", "servicebusqueue@v1", "servicebustopic@v1"}

// Export sources.
const (
	SourceTelemetry               = "telemetry"
	SourceProperties              = "properties"
	SourceDeviceConnectivity      = "deviceConnectivity"
	SourceDeviceLifecycle         = "deviceLifecycle"
	SourceDeviceTemplateLifecycle = "deviceTemplateLifecycle"
)

// Sources lists the export sources the emulator serves ("audit" is not).
var Sources = []string{SourceTelemetry, SourceProperties, SourceDeviceConnectivity, SourceDeviceLifecycle, SourceDeviceTemplateLifecycle}

// Limits (IoT Central allows up to five destinations per export).
const (
	// MaxDestinationsPerExport is how many destinations one export may name.
	MaxDestinationsPerExport = 5
	// MaxEnrichments is how many enrichments one export may have.
	MaxEnrichments = 20
	// MaxFilterBytes bounds an export's filter query.
	MaxFilterBytes = 4096
)

// Mask replaces secrets (a connection string's key, a secret header or
// query value, an authorization header value) in what the API returns. A
// PUT that sends Mask back for a secret keeps the stored secret.
const Mask = "*****"

// Customization is a header or query parameter a webhook request carries.
type Customization struct {
	// Value is the header or parameter value (Mask when Secret, on reads).
	Value string `json:"value"`
	// Secret hides Value on reads.
	Secret bool `json:"secret,omitempty"`
}

// Authorization is a destination's credential: for Event Hubs
// {"type":"connectionString","connectionString":...}; for a webhook
// {"type":"header","value":...} (sent as the Authorization header).
type Authorization struct {
	// Type is "connectionString" (Event Hubs) or "header" (webhook).
	Type string `json:"type"`
	// ConnectionString is the Event Hubs connection string, with EntityPath.
	ConnectionString string `json:"connectionString,omitempty"`
	// Value is the webhook's Authorization header value.
	Value string `json:"value,omitempty"`
}

// DataExportError is an error shown in a status (IoT Central's shape).
type DataExportError struct {
	// Code names the condition ("destinationUnreachable", ...).
	Code string `json:"code"`
	// Message describes it.
	Message string `json:"message"`
}

// Status is the read-only state IoT Central shows on destinations and
// exports.
type Status struct {
	// Status is "waiting", "healthy" or "error" (destinations) and
	// "notStarted", "starting", "healthy" or "error" (exports).
	Status string `json:"status,omitempty"`
	// Errors are the current errors (empty when healthy).
	Errors []DataExportError `json:"errors,omitempty"`
	// LastExportTime is when a message was last delivered (RFC 3339, ms).
	LastExportTime string `json:"lastExportTime,omitempty"`
}

// Destination is a data export destination (IoT Central's Destination,
// discriminated by Type).
type Destination struct {
	// ID is the destination id (from the path).
	ID string `json:"id"`
	// DisplayName is required.
	DisplayName string `json:"displayName"`
	// Type is TypeWebhook or TypeEventHubs.
	Type string `json:"type"`
	// URL is the webhook's URL (http or https).
	URL string `json:"url,omitempty"`
	// QueryCustomizations are added to the webhook URL's query.
	QueryCustomizations map[string]Customization `json:"queryCustomizations,omitempty"`
	// HeaderCustomizations are added to each webhook request.
	HeaderCustomizations map[string]Customization `json:"headerCustomizations,omitempty"`
	// Authorization is required for Event Hubs, optional for a webhook.
	Authorization *Authorization `json:"authorization,omitempty"`
	Status
}

// DestinationRef names a destination of an export.
type DestinationRef struct {
	// ID is the destination's id; it must exist.
	ID string `json:"id"`
	// Transform is IoT Central's jq-like transformation; the emulator
	// refuses a non-empty one.
	Transform string `json:"transform,omitempty"`
}

// Enrichment adds one value to exported messages: Value (a static value),
// Path alone (a device system property: $enabled, $displayName,
// $templateDisplayName, $organizations, $provisioned, $simulated), or
// Target and Path (the device's current reported property Path of the
// interface Target, else its writable/cloud property value).
type Enrichment struct {
	// Target is a device template id, capability model id or component
	// interface id.
	Target string `json:"target,omitempty"`
	// Path is the property name or the system property.
	Path string `json:"path,omitempty"`
	// Value is the static value.
	Value any `json:"value,omitempty"`
}

// Export is a data export definition.
type Export struct {
	// ID is the export id (from the path).
	ID string `json:"id"`
	// DisplayName is required.
	DisplayName string `json:"displayName"`
	// Enabled starts and stops the export; required.
	Enabled bool `json:"enabled"`
	// Source is one of Sources; required.
	Source string `json:"source"`
	// Filter is the export query (see ParseFilter); optional.
	Filter string `json:"filter,omitempty"`
	// Enrichments are added to every message, by name.
	Enrichments map[string]Enrichment `json:"enrichments,omitempty"`
	// Destinations are 1 to MaxDestinationsPerExport existing destinations.
	Destinations []DestinationRef `json:"destinations"`
	Status
}

// ErrInvalid is the error of a definition the API refuses (422); it is the
// core's ErrInvalid.
var ErrInvalid = core.ErrInvalid

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9_.\-]{1,255}$`)

// CheckID validates a destination or export id: 1 to 255 letters, digits,
// '-', '_' or '.'. Errors wrap ErrInvalid.
func CheckID(kind, id string) error {
	if !idPattern.MatchString(id) {
		return invalidf("%s id %q must be 1 to 255 letters, digits, '-', '_' or '.'", kind, id)
	}
	return nil
}

// CheckDestination validates d (its ID set). Errors wrap ErrInvalid.
func CheckDestination(d Destination) error {
	if err := CheckID("destination", d.ID); err != nil {
		return err
	}
	if strings.TrimSpace(d.DisplayName) == "" {
		return invalidf("displayName is required")
	}
	switch d.Type {
	case TypeWebhook:
		u, err := url.Parse(d.URL)
		if d.URL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return invalidf("url %q must be an absolute http or https URL", d.URL)
		}
		if a := d.Authorization; a != nil {
			switch a.Type {
			case "header":
				if a.Value == "" {
					return invalidf("authorization of type header needs a value")
				}
			case "oauth":
				return invalidf("webhook authorization of type oauth is not served by the emulator; use type header")
			default:
				return invalidf("webhook authorization type %q: use header", a.Type)
			}
		}
		for name := range d.HeaderCustomizations {
			if name == "" || strings.ContainsAny(name, " \t\r\n:") {
				return invalidf("header customization name %q is not a header name", name)
			}
		}
	case TypeEventHubs:
		a := d.Authorization
		switch {
		case a == nil:
			return invalidf("an eventhubs@v1 destination needs authorization")
		case a.Type == "systemAssignedManagedIdentity":
			return invalidf("managed identities are not served by the emulator; use authorization type connectionString")
		case a.Type != "connectionString":
			return invalidf("eventhubs@v1 authorization type %q: use connectionString", a.Type)
		}
		if _, err := parseEventHubsConnectionString(a.ConnectionString); err != nil {
			return err
		}
		if d.URL != "" || len(d.HeaderCustomizations) > 0 || len(d.QueryCustomizations) > 0 {
			return invalidf("url and customizations belong to webhook@v1 destinations")
		}
	case "":
		return invalidf("type is required: %s or %s", TypeWebhook, TypeEventHubs)
	default:
		if slices.Contains(unservedTypes, d.Type) {
			return invalidf("destination type %q is not served by the emulator (it exports to %s and %s)", d.Type, TypeWebhook, TypeEventHubs)
		}
		return invalidf("unknown destination type %q", d.Type)
	}
	return nil
}

// ehConn is the part of an Event Hubs connection string the emulator
// checks.
type ehConn struct {
	endpoint, keyName, entity string
}

// parseEventHubsConnectionString checks "Endpoint=sb://...;
// SharedAccessKeyName=...;SharedAccessKey=...;EntityPath=..." (any order).
// The error never holds the key.
func parseEventHubsConnectionString(cs string) (ehConn, error) {
	var c ehConn
	var key bool
	for _, part := range strings.Split(cs, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch strings.ToLower(k) {
		case "endpoint":
			c.endpoint = v
		case "sharedaccesskeyname":
			c.keyName = v
		case "sharedaccesskey", "sharedaccesssignature":
			key = v != ""
		case "entitypath":
			c.entity = v
		}
	}
	u, err := url.Parse(c.endpoint)
	switch {
	case c.endpoint == "" || err != nil || u.Scheme != "sb" || u.Host == "":
		return c, invalidf("the connection string needs Endpoint=sb://<namespace host>/")
	case !key:
		return c, invalidf("the connection string needs SharedAccessKeyName and SharedAccessKey")
	case c.entity == "":
		return c, invalidf("the connection string needs the EntityPath of the event hub")
	}
	return c, nil
}

// maskConnectionString replaces the key of a connection string with Mask.
func maskConnectionString(cs string) string {
	parts := strings.Split(cs, ";")
	for i, p := range parts {
		k, _, ok := strings.Cut(p, "=")
		if ok && (strings.EqualFold(strings.TrimSpace(k), "SharedAccessKey") || strings.EqualFold(strings.TrimSpace(k), "SharedAccessSignature")) {
			parts[i] = k + "=" + Mask
		}
	}
	return strings.Join(parts, ";")
}

// Masked returns d as the API shows it: secrets replaced by Mask.
func (d Destination) Masked() Destination {
	out := d
	if d.Authorization != nil {
		a := *d.Authorization
		a.ConnectionString = maskConnectionString(a.ConnectionString)
		if a.Value != "" {
			a.Value = Mask
		}
		out.Authorization = &a
	}
	out.HeaderCustomizations = maskCustom(d.HeaderCustomizations)
	out.QueryCustomizations = maskCustom(d.QueryCustomizations)
	return out
}

func maskCustom(m map[string]Customization) map[string]Customization {
	if m == nil {
		return nil
	}
	out := make(map[string]Customization, len(m))
	for k, v := range m {
		if v.Secret {
			v.Value = Mask
		}
		out[k] = v
	}
	return out
}

// keepSecrets returns d with every secret sent back as Mask (or as a
// masked connection string) replaced by the one of old.
func keepSecrets(d, old Destination) Destination {
	if d.Authorization != nil && old.Authorization != nil {
		a := *d.Authorization
		if a.ConnectionString != "" && a.ConnectionString == maskConnectionString(old.Authorization.ConnectionString) {
			a.ConnectionString = old.Authorization.ConnectionString
		}
		if a.Value == Mask {
			a.Value = old.Authorization.Value
		}
		d.Authorization = &a
	}
	keep := func(m, prev map[string]Customization) map[string]Customization {
		if m == nil {
			return nil
		}
		out := make(map[string]Customization, len(m))
		for k, v := range m {
			if p, ok := prev[k]; ok && v.Secret && v.Value == Mask {
				v.Value = p.Value
			}
			out[k] = v
		}
		return out
	}
	d.HeaderCustomizations = keep(d.HeaderCustomizations, old.HeaderCustomizations)
	d.QueryCustomizations = keep(d.QueryCustomizations, old.QueryCustomizations)
	return d
}

// systemPaths are the device system properties an enrichment may name.
var systemPaths = []string{"$enabled", "$displayName", "$templateDisplayName", "$organizations", "$provisioned", "$simulated"}

// CheckExport validates e (its ID set) against the destinations that
// exist (exists reports one). Errors wrap ErrInvalid.
func CheckExport(e Export, exists func(id string) bool) error {
	if err := CheckID("export", e.ID); err != nil {
		return err
	}
	if strings.TrimSpace(e.DisplayName) == "" {
		return invalidf("displayName is required")
	}
	if e.Source == "audit" {
		return invalidf("source audit is not served by the emulator (it has no audit log)")
	}
	if !slices.Contains(Sources, e.Source) {
		return invalidf("source %q must be one of %s", e.Source, strings.Join(Sources, ", "))
	}
	if len(e.Destinations) == 0 {
		return invalidf("destinations must name at least one destination")
	}
	if len(e.Destinations) > MaxDestinationsPerExport {
		return invalidf("an export has at most %d destinations, not %d", MaxDestinationsPerExport, len(e.Destinations))
	}
	seen := map[string]bool{}
	for _, r := range e.Destinations {
		if r.Transform != "" {
			return invalidf("destination %q: transforms are not served by the emulator", r.ID)
		}
		if seen[r.ID] {
			return invalidf("destination %q is named twice", r.ID)
		}
		seen[r.ID] = true
		if !exists(r.ID) {
			return invalidf("destination %q does not exist", r.ID)
		}
	}
	if len(e.Enrichments) > MaxEnrichments {
		return invalidf("an export has at most %d enrichments", MaxEnrichments)
	}
	if len(e.Enrichments) > 0 && e.Source == SourceDeviceTemplateLifecycle {
		for name, en := range e.Enrichments {
			if en.Value == nil {
				return invalidf("enrichment %q: device template lifecycle messages take only static values", name)
			}
		}
	}
	for name, en := range e.Enrichments {
		if name == "" {
			return invalidf("an enrichment has an empty name")
		}
		switch {
		case en.Value != nil:
			if en.Path != "" || en.Target != "" {
				return invalidf("enrichment %q: value excludes path and target", name)
			}
		case en.Target == "" && strings.HasPrefix(en.Path, "$"):
			if !slices.Contains(systemPaths, en.Path) {
				return invalidf("enrichment %q: system property %q must be one of %s", name, en.Path, strings.Join(systemPaths, ", "))
			}
		case en.Target != "" && en.Path != "" && !strings.HasPrefix(en.Path, "$"):
		default:
			return invalidf("enrichment %q needs a value, a system property path ($...), or a target and a property path", name)
		}
	}
	if e.Filter != "" {
		if _, err := ParseFilter(e.Filter, e.Source); err != nil {
			return err
		}
	}
	return nil
}
