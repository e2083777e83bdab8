package hubapi

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

var queryTwins = []string{
	`{"deviceId":"d1","status":"enabled","tags":{"site":"lab","floor":1},"properties":{"desired":{"fan":true},"reported":{"temp":21.5,"fw":"1.0"}}}`,
	`{"deviceId":"d2","status":"disabled","tags":{"site":"lab","floor":2},"properties":{"desired":{},"reported":{"temp":30,"fw":"1.1"}}}`,
	`{"deviceId":"d3","status":"enabled","tags":{"site":"home"},"properties":{"desired":{"fan":false},"reported":{"fw":"1.1"}}}`,
	`{"deviceId":"d4","status":"enabled","tags":{},"properties":{"desired":{},"reported":{"temp":-5}}}`,
}

func TestQueryLanguage(t *testing.T) {
	var docs []map[string]any
	for _, s := range queryTwins {
		var m map[string]any
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatal(err)
		}
		docs = append(docs, m)
	}
	for _, tc := range []struct {
		q, want string // want: the rows' JSON
	}{
		{"SELECT deviceId FROM devices", `[{"deviceId":"d1"},{"deviceId":"d2"},{"deviceId":"d3"},{"deviceId":"d4"}]`},
		{"select deviceId from devices where tags.site = 'lab'", `[{"deviceId":"d1"},{"deviceId":"d2"}]`},
		{`SELECT deviceId FROM devices WHERE tags.site = "home"`, `[{"deviceId":"d3"}]`},
		{"SELECT deviceId FROM devices WHERE tags.site != 'lab'", `[{"deviceId":"d3"}]`},
		{"SELECT deviceId FROM devices WHERE tags.site <> 'lab'", `[{"deviceId":"d3"}]`},
		{"SELECT deviceId FROM devices WHERE properties.reported.temp > 21", `[{"deviceId":"d1"},{"deviceId":"d2"}]`},
		{"SELECT deviceId FROM devices WHERE properties.reported.temp >= 30", `[{"deviceId":"d2"}]`},
		{"SELECT deviceId FROM devices WHERE properties.reported.temp < 0", `[{"deviceId":"d4"}]`},
		{"SELECT deviceId FROM devices WHERE properties.reported.temp <= 21.5", `[{"deviceId":"d1"},{"deviceId":"d4"}]`},
		{"SELECT deviceId FROM devices WHERE tags.site = 'lab' AND properties.reported.temp > 25", `[{"deviceId":"d2"}]`},
		{"SELECT deviceId FROM devices WHERE tags.floor = 2 OR tags.site = 'home'", `[{"deviceId":"d2"},{"deviceId":"d3"}]`},
		{"SELECT deviceId FROM devices WHERE NOT tags.site = 'lab'", `[{"deviceId":"d3"},{"deviceId":"d4"}]`},
		{"SELECT deviceId FROM devices WHERE NOT (tags.site = 'lab' OR IS_DEFINED(properties.reported.temp))", `[{"deviceId":"d3"}]`},
		{"SELECT deviceId FROM devices WHERE IS_DEFINED(tags.floor)", `[{"deviceId":"d1"},{"deviceId":"d2"}]`},
		{"SELECT deviceId FROM devices WHERE properties.desired.fan = true", `[{"deviceId":"d1"}]`},
		{"SELECT deviceId FROM devices WHERE status = 'disabled'", `[{"deviceId":"d2"}]`},
		{"SELECT deviceId FROM devices WHERE deviceId = 'd4'", `[{"deviceId":"d4"}]`},
		{"SELECT deviceId FROM devices WHERE deviceId IN ['d1', 'd3', 'nope']", `[{"deviceId":"d1"},{"deviceId":"d3"}]`},
		{"SELECT deviceId FROM devices WHERE tags.floor IN [2, 3] OR deviceId IN []", `[{"deviceId":"d2"}]`},
		// Different types and undefined paths compare false.
		{"SELECT deviceId FROM devices WHERE properties.reported.temp = '30'", `[]`},
		{"SELECT deviceId FROM devices WHERE tags.nothing != 'x'", `[]`},
		{"SELECT deviceId, tags.site, properties.reported.fw AS version FROM devices WHERE deviceId = 'd1'",
			`[{"deviceId":"d1","site":"lab","version":"1.0"}]`},
		{"SELECT COUNT() AS n FROM devices WHERE tags.site = 'lab'", `[{"n":2}]`},
		{"SELECT COUNT() FROM devices WHERE tags.site = 'nowhere'", `[{"$1":0}]`},
		{"SELECT properties.reported.fw AS fw, COUNT() AS n FROM devices GROUP BY properties.reported.fw",
			`[{"fw":"1.0","n":1},{"fw":"1.1","n":2},{"n":1}]`},
	} {
		t.Run(tc.q, func(t *testing.T) {
			q, err := parseQuery(tc.q)
			if err != nil {
				t.Fatal(err)
			}
			rows := q.run(docs)
			b, _ := json.Marshal(rows)
			if rows == nil {
				b = []byte("[]")
			}
			if string(b) != tc.want {
				t.Fatalf("got  %s\nwant %s", b, tc.want)
			}
		})
	}
	// SELECT * returns the twins.
	q, err := parseQuery("SELECT * FROM devices WHERE tags.site = 'home'")
	if err != nil {
		t.Fatal(err)
	}
	if rows := q.run(docs); len(rows) != 1 || rows[0].(map[string]any)["deviceId"] != "d3" {
		t.Fatalf("SELECT * rows %v", rows)
	}
}

func TestQueryRefused(t *testing.T) {
	for _, q := range []string{
		"",
		"DELETE FROM devices",
		"SELECT * FROM devices.jobs",
		"SELECT * FROM jobs",
		"SELECT * FROM devices WHERE",
		"SELECT * FROM devices WHERE tags.a = ",
		"SELECT * FROM devices WHERE tags.a == 1",
		"SELECT * FROM devices WHERE (tags.a = 1",
		"SELECT * FROM devices WHERE tags.a = 'open",
		"SELECT * FROM devices GROUP BY tags.a",
		"SELECT COUNT( FROM devices",
		"SELECT * FROM devices extra",
		"SELECT * FROM devices WHERE " + strings.Repeat("(", 100) + "tags.a = 1" + strings.Repeat(")", 100),
		"SELECT * FROM devices WHERE tags.a = 1 ; DROP",
		"SELECT * FROM devices WHERE deviceId IN ['a' 'b']",
		"SELECT * FROM devices WHERE deviceId IN [tags.a]",
		"SELECT * FROM devices WHERE deviceId IN ['a'",
		"SELECT * FROM devices WHERE deviceId IN 'a'",
		strings.Repeat("x", MaxQueryLen+1),
	} {
		if _, err := parseQuery(q); !errors.Is(err, errQuery) {
			t.Errorf("%.60q: %v", q, err)
		}
	}
}

func FuzzParseQuery(f *testing.F) {
	f.Add("SELECT * FROM devices WHERE tags.a = 'b' AND NOT (properties.reported.x > 1 OR IS_DEFINED(tags.c))")
	f.Add("SELECT properties.reported.fw AS fw, COUNT() AS n FROM devices GROUP BY properties.reported.fw")
	f.Fuzz(func(t *testing.T, s string) {
		q, err := parseQuery(s)
		if err != nil {
			if !errors.Is(err, errQuery) {
				t.Fatalf("error %v does not wrap errQuery", err)
			}
			return
		}
		var m map[string]any
		_ = json.Unmarshal([]byte(queryTwins[0]), &m)
		q.run([]map[string]any{m})
	})
}
