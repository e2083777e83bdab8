package core

import (
	"strings"
	"testing"
)

func TestParseRegisterRequest(t *testing.T) {
	for _, tc := range []struct{ body, reg, model string }{
		{`{"registrationId":"a","payload":{"modelId":"dtmi:x;1"}}`, "a", "dtmi:x;1"},
		{`{"registrationId":"a","payload":{"iotcModelId":"dtmi:y;2"}}`, "a", "dtmi:y;2"},
		{`{"registrationId":"a","payload":{"modelId":"dtmi:m;1","iotcModelId":"n"}}`, "a", "dtmi:m;1"},
		{`{"registrationId":"a","payload":{"iotcModelId":"urn:x:y:1"}}`, "a", "urn:x:y:1"},
		{`{"payload":null,"registrationId":"b"}`, "b", ""},
		{`{"registrationId":"c","payload":"a string"}`, "c", ""},
		{`{}`, "", ""},
	} {
		reg, model, err := parseRegisterRequest([]byte(tc.body))
		if err != nil || reg != tc.reg || model != tc.model {
			t.Errorf("parseRegisterRequest(%s) = %q, %q, %v", tc.body, reg, model, err)
		}
	}
	for _, bad := range []string{``, `[]`, `{`, `"x"`, `{"registrationId":5}`, `null`, ` null`,
		`{"payload":{"modelId":"m"}}`, `{"payload":{"modelId":"<b>dtmi:x;1</b>"}}`, `{"payload":{"modelId":"dtmi:x;0"}}`,
		`{"payload":{"modelId":"dtmi:` + strings.Repeat("a", 2048) + `;1"}}`, `{"payload":{"iotcModelId":"<script>"}}`} {
		if _, _, err := parseRegisterRequest([]byte(bad)); err == nil {
			t.Errorf("parseRegisterRequest(%q) accepted", bad)
		}
	}
}

func FuzzParseRegisterRequest(f *testing.F) {
	f.Add([]byte(`{"registrationId":"a","payload":{"modelId":"dtmi:x;1"}}`))
	f.Add([]byte(`{"payload":{"iotcModelId":"m"}}`))
	f.Add([]byte(` `))
	f.Fuzz(func(t *testing.T, b []byte) {
		reg, model, err := parseRegisterRequest(b)
		if err != nil && (reg != "" || model != "") {
			t.Fatalf("error %v with values %q %q", err, reg, model)
		}
	})
}
