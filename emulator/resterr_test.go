package emulator

import (
	"strings"
	"testing"
)

// TestRESTErrorTexts: REST error messages say what is wrong once, without
// internal package names ("restapi:", "emulator:").
func TestRESTErrorTexts(t *testing.T) {
	e := startEmu(t, &Options{RESTAddr: "127.0.0.1:0"})
	for _, path := range []string{"/api/devices/nope", "/api/enrollmentGroups/nope", "/api/devices/nope/properties"} {
		status, body := restDo(t, e, "GET", path, e.APIToken(), nil)
		if status != 404 {
			t.Errorf("GET %s: %d %s, want 404", path, status, body)
		}
		msg := string(body)
		for _, internal := range []string{"restapi", "emulator:"} {
			if strings.Contains(msg, internal) {
				t.Errorf("GET %s: %s names %q", path, msg, internal)
			}
		}
		if strings.Count(msg, "not found") != 1 {
			t.Errorf("GET %s: %s: want \"not found\" once", path, msg)
		}
	}
}
