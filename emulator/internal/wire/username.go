// Package wire holds the pure parsers the emulator applies to what devices
// send over MQTT: the CONNECT user name, request topics, subscription
// filters and twin patch documents. Nothing here does I/O, so every
// function can be unit-tested and fuzzed on its own.
package wire

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// ErrMalformed is wrapped by every parse error of this package.
var ErrMalformed = errors.New("emulator: malformed input")

// Role says which service a connection talks to.
type Role int

const (
	// RoleHub is an IoT Hub device connection ("{host}/{deviceId}/?{query}").
	RoleHub Role = iota + 1
	// RoleDPS is a provisioning connection
	// ("{idScope}/registrations/{registrationId}/api-version=...").
	RoleDPS
)

// String names the role for logs.
func (r Role) String() string {
	switch r {
	case RoleHub:
		return "hub"
	case RoleDPS:
		return "dps"
	}
	return "unknown"
}

// MaxUsernameLen bounds the user names ParseUsername accepts.
const MaxUsernameLen = 4096

// Username is a parsed MQTT CONNECT user name.
type Username struct {
	Role Role
	// Host is the hub host name the device used (RoleHub).
	Host string
	// DeviceID and ModuleID name the hub identity (RoleHub); ModuleID is
	// empty for a device.
	DeviceID, ModuleID string
	// IDScope and RegistrationID name the registration (RoleDPS).
	IDScope, RegistrationID string
	// APIVersion is the api-version query value, "" when absent.
	APIVersion string
	// ModelID is the URL-decoded model-id query value (RoleHub), "" when absent.
	ModelID string
	// Query holds every query parameter, decoded, first value wins.
	Query map[string]string
}

// ParseUsername tells a DPS user name
// ("{idScope}/registrations/{regId}/api-version=...&ClientVersion=...")
// from a hub one ("{host}/{deviceId}/?api-version=...&model-id=..."), as
// every official SDK spells them (protocol.md B.1, C.1). Unknown query keys
// are kept; a query that does not decode is kept raw. It returns an error
// wrapping ErrMalformed for an empty or over-long name or a missing part.
func ParseUsername(s string) (Username, error) {
	var u Username
	if s == "" {
		return u, fmt.Errorf("%w: empty user name", ErrMalformed)
	}
	if len(s) > MaxUsernameLen {
		return u, fmt.Errorf("%w: user name of %d bytes", ErrMalformed, len(s))
	}
	if scope, rest, ok := strings.Cut(s, "/registrations/"); ok && !strings.Contains(scope, "/") && !strings.Contains(scope, "?") {
		reg, query, _ := strings.Cut(rest, "/")
		if reg != "" && !strings.HasPrefix(reg, "?") && !strings.Contains(reg, "?") {
			if scope == "" {
				return u, fmt.Errorf("%w: DPS user name without an ID scope", ErrMalformed)
			}
			u.Role = RoleDPS
			u.IDScope = scope
			u.RegistrationID = reg
			u.Query = ParseQuery(strings.TrimPrefix(query, "?"))
			u.APIVersion = u.Query["api-version"]
			return u, nil
		}
	}
	path, query, _ := strings.Cut(s, "?")
	path = strings.TrimSuffix(path, "/")
	parts := strings.Split(path, "/")
	if len(parts) < 2 || len(parts) > 3 {
		return u, fmt.Errorf("%w: user name %q is neither {host}/{device}/?... nor {scope}/registrations/{id}/...", ErrMalformed, s)
	}
	for _, p := range parts {
		if p == "" {
			return u, fmt.Errorf("%w: user name %q has an empty segment", ErrMalformed, s)
		}
	}
	u.Role = RoleHub
	u.Host = parts[0]
	u.DeviceID = parts[1]
	if len(parts) == 3 {
		u.ModuleID = parts[2]
	}
	u.Query = ParseQuery(query)
	u.APIVersion = u.Query["api-version"]
	u.ModelID = u.Query["model-id"]
	return u, nil
}

// ParseQuery splits "k=v&k=v" leniently: unlike url.ParseQuery it accepts
// ';' inside values (Node sends model ids such as "dtmi:x:y;1" unencoded),
// keeps a value raw when it is not valid percent-encoding, and keeps the
// first of repeated keys. Keys without '=' map to "".
func ParseQuery(q string) map[string]string {
	m := map[string]string{}
	for _, seg := range strings.Split(q, "&") {
		if seg == "" {
			continue
		}
		k, v, _ := strings.Cut(seg, "=")
		k = unescapeLenient(k)
		if _, dup := m[k]; dup {
			continue
		}
		m[k] = unescapeLenient(v)
	}
	return m
}

func unescapeLenient(s string) string {
	if d, err := url.QueryUnescape(s); err == nil {
		return d
	}
	return s
}
