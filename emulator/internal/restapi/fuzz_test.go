package restapi

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/url"
	"strconv"
	"testing"
	"time"
)

// FuzzParseRequests feeds arbitrary bodies to every request decoder: none may
// panic, every refusal wraps ErrBadRequest, and every success holds the
// invariants the backend relies on.
func FuzzParseRequests(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `null`, `[]`, `{"request":{"a":1},"responseTimeout":10,"connectionTimeout":5}`,
		`{"responseTimeout":4}`, `{"request":"x"} trailing`, `{"data":"hi","properties":{"a":"b","n":1,"t":true}}`,
		`{"data":{"x":[1,2]}}`, `{"targetTemperature":21}`, `{"c":{"__t":"c","p":1}}`, `{"$x":1}`,
		`{"attestation":{"type":"symmetricKey"}}`, `{"attestation":{"type":"x509","x509":{"signingCertificates":{"primary":{"certificate":"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"}}}}}`,
		`{"attestation":{"type":"symmetricKey","symmetricKey":{"primaryKey":"AAAAAAAAAAAAAAAAAAAAAA=="}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		check := func(what string, err error) {
			if err != nil && !errors.Is(err, ErrBadRequest) && !errors.Is(err, ErrValidation) {
				t.Fatalf("%s: error wraps neither ErrBadRequest nor ErrValidation: %v", what, err)
			}
		}
		req, err := parseCommandRequest(body)
		check("command", err)
		if err == nil {
			if req.ResponseTimeout < MinResponseTimeout || req.ResponseTimeout > MaxResponseTimeout ||
				req.ConnectionTimeout < 0 || req.ConnectionTimeout > MaxConnectionTimeout {
				t.Fatalf("command timeouts out of range: %+v", req)
			}
			if req.Request != nil && !json.Valid(req.Request) {
				t.Fatalf("command request is not JSON: %q", req.Request)
			}
		}
		msg, echo, err := parseMessage(body)
		check("message", err)
		if err == nil && echo != nil && !json.Valid(echo) {
			t.Fatalf("message echo is not JSON: %q (%+v)", echo, msg)
		}
		for _, c := range []string{"", "thermostat1"} {
			patch, err := parsePropertiesPatch(body, c, false)
			check("patch", err)
			if err == nil {
				if len(patch) == 0 {
					t.Fatal("empty patch accepted")
				}
				for k := range patch {
					if checkName("property", k, "") != nil {
						t.Fatalf("bad property name accepted: %q", k)
					}
				}
			}
		}
		g, err := parseEnrollmentGroup(body, "group-1")
		check("group", err)
		if err == nil {
			if g.ID != "group-1" || g.DisplayName == "" || (g.Type != "iot" && g.Type != "iotEdge") {
				t.Fatalf("group defaults not applied: %+v", g)
			}
			switch g.Attestation.Type {
			case AttestationSymmetricKey:
				for _, k := range []string{g.Attestation.SymmetricKey.PrimaryKey, g.Attestation.SymmetricKey.SecondaryKey} {
					if raw, err := base64.StdEncoding.DecodeString(k); err != nil || len(raw) < minKeyBytes || len(raw) > maxKeyBytes {
						t.Fatalf("bad key accepted: %q", k)
					}
				}
			case AttestationX509:
				if g.Attestation.X509.SigningCertificates.Primary.Info.SHA1Thumbprint == "" {
					t.Fatalf("x509 group without a checked primary certificate: %+v", g)
				}
			default:
				t.Fatalf("attestation type accepted: %q", g.Attestation.Type)
			}
		}
	})
}

// FuzzPropertiesView builds views over arbitrary twin JSON: no panic, and the
// view always encodes as JSON.
func FuzzPropertiesView(f *testing.F) {
	f.Add([]byte(`{"$version":2,"p":{"value":1,"ac":200,"av":2},"c":{"__t":"c","q":1},"$metadata":{"p":{"$lastUpdated":"x"}}}`))
	f.Add([]byte(`{"c":{"__t":"c","$metadata":5,"x":{"__t":"c"}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var m map[string]any
		if json.Unmarshal(b, &m) != nil {
			return
		}
		before, _ := json.Marshal(m)
		for _, c := range []string{"", "c"} {
			for _, tw := range []Twin{{Desired: m}, {Reported: m}, {Desired: m, Reported: m}} {
				v := propertiesView(tw, c)
				if _, err := json.Marshal(v); err != nil {
					t.Fatalf("view does not encode: %v", err)
				}
				if _, err := json.Marshal(writeAnswer(m)); err != nil {
					t.Fatalf("write answer does not encode: %v", err)
				}
			}
		}
		if after, _ := json.Marshal(m); string(after) != string(before) {
			t.Fatalf("view or overlay changed the twin:\n%s\n%s", before, after)
		}
	})
}

// FuzzTelemetryQuery: any query string parses or fails with ErrBadRequest,
// and a query made from a parsed one parses to the same.
func FuzzTelemetryQuery(f *testing.F) {
	f.Add("since=2024-05-01T12:30:00.5Z&component=thermostat1&limit=7")
	f.Add("component=&limit=1")
	f.Add("since=bad")
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := parseTelemetryQuery(v)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("parseTelemetryQuery(%q) = %v, not ErrBadRequest", raw, err)
			}
			return
		}
		back := url.Values{}
		if !q.Since.IsZero() {
			back.Set("since", q.Since.Format(time.RFC3339Nano))
		}
		if q.ByComponent {
			back.Set("component", q.Component)
		}
		if q.Limit > 0 {
			back.Set("limit", strconv.Itoa(q.Limit))
		}
		q2, err := parseTelemetryQuery(back)
		if err != nil || !q2.Since.Equal(q.Since) || q2.Component != q.Component || q2.ByComponent != q.ByComponent || q2.Limit != q.Limit {
			t.Fatalf("round trip of %q: %+v -> %q -> %+v, %v", raw, q, back.Encode(), q2, err)
		}
	})
}
