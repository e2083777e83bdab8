package amqphub

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// ErrBadAddress is returned (wrapped) by the address and user-name parsers
// for input that names no IoT Hub or DPS node.
var ErrBadAddress = errors.New("amqphub: not an IoT Hub or DPS address")

// maxAddressLen bounds addresses, audiences and user names (IoT Hub ids are
// at most 128 characters; hosts at most 253).
const maxAddressLen = 1024

// nodeKind is the IoT Hub or DPS node a link address names.
type nodeKind int

const (
	nodeCBS               nodeKind = iota + 1 // $cbs
	nodeTelemetry                             // /devices/{id}/messages/events
	nodeC2D                                   // /devices/{id}/messages/devicebound
	nodeMethods                               // /devices/{id}/methods/devicebound
	nodeTwin                                  // /devices/{id}/twin
	nodeDPS                                   // {scope}/registrations/{reg}
	nodeServiceC2D                            // /messages/devicebound (service sender)
	nodeFeedback                              // /messages/serviceBound/feedback (service receiver)
	nodeFileNotifications                     // /messages/serviceBound/filenotifications (service receiver)
)

func (k nodeKind) String() string {
	switch k {
	case nodeCBS:
		return "cbs"
	case nodeTelemetry:
		return "telemetry"
	case nodeC2D:
		return "c2d"
	case nodeMethods:
		return "methods"
	case nodeTwin:
		return "twin"
	case nodeDPS:
		return "dps"
	case nodeServiceC2D:
		return "service-c2d"
	case nodeFeedback:
		return "feedback"
	case nodeFileNotifications:
		return "file-notifications"
	}
	return "unknown"
}

// address is a parsed link address.
type address struct {
	kind nodeKind
	// host is the "amqps://host" part, "" when the address is relative.
	host string
	// deviceID and moduleID name the device (hub nodes); moduleID is "" for a device.
	deviceID, moduleID string
	// scope and regID name the registration (DPS).
	scope, regID string
}

// parseAddress parses a link address as the Azure IoT SDKs send it: with
// or without "amqps://{host}" (C uses absolute addresses, Node relative
// ones), path segments compared ignoring case, ids URL-decoded, a query
// string ignored.
func parseAddress(s string) (address, error) {
	var a address
	if len(s) > maxAddressLen {
		return a, fmt.Errorf("%w: address of %d bytes", ErrBadAddress, len(s))
	}
	rest := s
	for _, scheme := range []string{"amqps://", "amqp://", "wss://"} {
		if len(rest) >= len(scheme) && strings.EqualFold(rest[:len(scheme)], scheme) {
			rest = rest[len(scheme):]
			host, path, _ := strings.Cut(rest, "/")
			if host == "" {
				return a, fmt.Errorf("%w: %q has no host", ErrBadAddress, s)
			}
			a.host, rest = host, "/"+path
			break
		}
	}
	if i := strings.IndexByte(rest, '?'); i >= 0 {
		rest = rest[:i]
	}
	if strings.EqualFold(strings.Trim(rest, "/"), "$cbs") {
		a.kind = nodeCBS
		return a, nil
	}
	switch p := strings.ToLower(strings.Trim(rest, "/")); p {
	case "messages/devicebound":
		a.kind = nodeServiceC2D
		return a, nil
	case "messages/servicebound/feedback":
		a.kind = nodeFeedback
		return a, nil
	case "messages/servicebound/filenotifications":
		a.kind = nodeFileNotifications
		return a, nil
	}
	segs := strings.Split(strings.Trim(rest, "/"), "/")
	for _, sg := range segs {
		if sg == "" {
			return a, fmt.Errorf("%w: %q has an empty segment", ErrBadAddress, s)
		}
	}
	if len(segs) == 3 && strings.EqualFold(segs[1], "registrations") {
		scope, err := unescapeID(segs[0])
		if err != nil {
			return a, fmt.Errorf("%w: %q: %w", ErrBadAddress, s, err)
		}
		reg, err := unescapeID(segs[2])
		if err != nil {
			return a, fmt.Errorf("%w: %q: %w", ErrBadAddress, s, err)
		}
		a.kind, a.scope, a.regID = nodeDPS, scope, reg
		return a, nil
	}
	if len(segs) < 3 || !strings.EqualFold(segs[0], "devices") {
		return a, fmt.Errorf("%w: %q", ErrBadAddress, s)
	}
	id, err := unescapeID(segs[1])
	if err != nil {
		return a, fmt.Errorf("%w: %q: %w", ErrBadAddress, s, err)
	}
	a.deviceID = id
	tail := segs[2:]
	if len(tail) >= 2 && strings.EqualFold(tail[0], "modules") {
		mid, err := unescapeID(tail[1])
		if err != nil {
			return a, fmt.Errorf("%w: %q: %w", ErrBadAddress, s, err)
		}
		a.moduleID, tail = mid, tail[2:]
	}
	switch {
	case len(tail) == 2 && strings.EqualFold(tail[0], "messages") && strings.EqualFold(tail[1], "events"):
		a.kind = nodeTelemetry
	case len(tail) == 2 && strings.EqualFold(tail[0], "messages") && strings.EqualFold(tail[1], "devicebound"):
		a.kind = nodeC2D
	case len(tail) == 2 && strings.EqualFold(tail[0], "methods") && strings.EqualFold(tail[1], "devicebound"):
		a.kind = nodeMethods
	case len(tail) == 1 && strings.EqualFold(tail[0], "twin"):
		a.kind = nodeTwin
	default:
		return a, fmt.Errorf("%w: %q", ErrBadAddress, s)
	}
	return a, nil
}

// unescapeID URL-decodes one path segment (the Node SDK may percent-encode
// ids) and refuses empty or control-character results.
func unescapeID(s string) (string, error) {
	out := s
	if strings.ContainsRune(s, '%') {
		if u, err := url.PathUnescape(s); err == nil {
			out = u
		}
	}
	if out == "" {
		return "", errors.New("empty id")
	}
	for _, r := range out {
		if r < 0x20 || r == 0x7f || r == '/' {
			return "", fmt.Errorf("id has character %q", r)
		}
	}
	return out, nil
}

// audience is a parsed CBS put-token name.
type audience struct {
	host, deviceID, moduleID string
}

// parseAudience parses a CBS audience: "{host}/devices/{id}" (C: raw;
// Node: the token's sr, URL-encoded), optionally with "/modules/{mid}".
func parseAudience(s string) (audience, error) {
	var a audience
	if len(s) > maxAddressLen {
		return a, fmt.Errorf("%w: audience of %d bytes", ErrBadAddress, len(s))
	}
	dec, err := url.QueryUnescape(strings.ReplaceAll(s, "+", "%2B"))
	if err != nil {
		return a, fmt.Errorf("%w: audience: %w", ErrBadAddress, err)
	}
	for _, scheme := range []string{"amqps://", "https://"} {
		if len(dec) >= len(scheme) && strings.EqualFold(dec[:len(scheme)], scheme) {
			dec = dec[len(scheme):]
		}
	}
	segs := strings.Split(strings.TrimSuffix(dec, "/"), "/")
	if (len(segs) != 3 && len(segs) != 5) || segs[0] == "" || !strings.EqualFold(segs[1], "devices") {
		return a, fmt.Errorf("%w: audience %q", ErrBadAddress, s)
	}
	if len(segs) == 5 && !strings.EqualFold(segs[3], "modules") {
		return a, fmt.Errorf("%w: audience %q", ErrBadAddress, s)
	}
	a.host = segs[0]
	if a.deviceID, err = unescapeID(segs[2]); err != nil {
		return a, fmt.Errorf("%w: audience %q: %w", ErrBadAddress, s, err)
	}
	if len(segs) == 5 {
		if a.moduleID, err = unescapeID(segs[4]); err != nil {
			return a, fmt.Errorf("%w: audience %q: %w", ErrBadAddress, s, err)
		}
	}
	return a, nil
}

// isServiceAudience reports whether a CBS audience names the hub itself
// ("{host}", as the service SDKs' policy tokens do), not a device.
func isServiceAudience(s, host string) bool {
	if len(s) > maxAddressLen {
		return false
	}
	dec, err := url.QueryUnescape(s)
	if err != nil {
		return false
	}
	for _, scheme := range []string{"amqps://", "https://"} {
		if len(dec) >= len(scheme) && strings.EqualFold(dec[:len(scheme)], scheme) {
			dec = dec[len(scheme):]
		}
	}
	return strings.EqualFold(strings.TrimSuffix(dec, "/"), host)
}

// plainUser is a parsed SASL PLAIN user name.
type plainUser struct {
	// hub form "{deviceId}@sas.{hubName}"
	deviceID, hubName string
	// DPS form "{scope}/registrations/{reg}"
	scope, regID string
}

func (u plainUser) isDPS() bool { return u.regID != "" }

// parsePlainUser parses a SASL PLAIN user name: "{deviceId}@sas.{hubName}"
// (IoT Hub docs) or "{idScope}/registrations/{registrationId}" (DPS).
func parsePlainUser(s string) (plainUser, error) {
	var u plainUser
	if len(s) > maxAddressLen {
		return u, fmt.Errorf("%w: user name of %d bytes", ErrBadAddress, len(s))
	}
	if segs := strings.Split(strings.Trim(s, "/"), "/"); len(segs) == 3 && strings.EqualFold(segs[1], "registrations") {
		scope, err1 := unescapeID(segs[0])
		reg, err2 := unescapeID(segs[2])
		if err := errors.Join(err1, err2); err != nil {
			return u, fmt.Errorf("%w: user name: %w", ErrBadAddress, err)
		}
		u.scope, u.regID = scope, reg
		return u, nil
	}
	i := strings.LastIndex(strings.ToLower(s), "@sas.")
	if i <= 0 || i+len("@sas.") >= len(s) {
		return u, fmt.Errorf("%w: user name is neither {deviceId}@sas.{hub} nor {scope}/registrations/{id}", ErrBadAddress)
	}
	id, err := unescapeID(s[:i])
	if err != nil {
		return u, fmt.Errorf("%w: user name: %w", ErrBadAddress, err)
	}
	u.deviceID, u.hubName = id, s[i+len("@sas."):]
	if strings.HasPrefix(strings.ToLower(u.hubName), "root.") {
		return u, fmt.Errorf("%w: service policy user names are not accepted from devices", ErrBadAddress)
	}
	return u, nil
}

// hubNameMatches reports whether name (from a PLAIN user name) names host:
// the full host or its first label, ignoring case.
func hubNameMatches(name, host string) bool {
	if strings.EqualFold(name, host) {
		return true
	}
	first, _, _ := strings.Cut(host, ".")
	return strings.EqualFold(name, first)
}

// hostIsHub reports whether host, the "amqps://{host}" part of a link
// address, names the hub: its host name with or without a port, ignoring
// case. An address on another host names a node of another hub, which
// this one must not serve as its own.
func hostIsHub(host, hub string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return strings.EqualFold(strings.TrimSuffix(host, "."), hub)
}
