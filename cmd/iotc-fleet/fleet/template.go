package fleet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// ErrTemplate is wrapped by every error of ParseTemplate.
var ErrTemplate = errors.New("fleet: bad telemetry template")

// DefaultTemplate is the telemetry template used when none is given: a
// temperature on a random walk, a humidity on a one-minute sine, a constant
// status and a message counter.
const DefaultTemplate = `{
  "temperature": {"$walk": {"start": 21, "step": 0.25, "min": 10, "max": 35}},
  "humidity":    {"$sine": {"mean": 45, "amplitude": 10, "period": "60s"}},
  "status":      "ok",
  "seq":         {"$counter": {"start": 1, "step": 1}}
}`

// Template is a parsed telemetry template: a JSON object whose values are
// literal JSON (sent as they are: constants) or one of these generators,
// written as a one-key object:
//
//	{"$walk":    {"start": 21, "step": 0.5, "min": 10, "max": 35}}  random walk: each message moves by a uniform step in [-step, step], kept in [min, max]
//	{"$sine":    {"mean": 50, "amplitude": 10, "period": "60s", "phase": 0}}  mean + amplitude*sin(2π t/period + phase), t since the device started
//	{"$counter": {"start": 0, "step": 1}}  start, start+step, ...
//	{"$const":   <any JSON>}  that value (also what a literal gives)
//
// Nested objects are templates too. A Template is immutable and safe for
// concurrent use; each device draws from its own Generator.
type Template struct {
	root *node
}

// node is one template value: a literal, a generator or an object.
type node struct {
	kind    string // "const", "walk", "sine", "counter", "object"
	literal json.RawMessage
	keys    []string // object: sorted keys
	fields  []*node
	// walk
	start, step, min, max float64
	// sine
	mean, amplitude, phase float64
	period                 time.Duration
}

// ParseTemplate parses a template (see Template). Errors wrap ErrTemplate:
// not a JSON object, an unknown "$" generator, a missing or non-numeric
// parameter, a walk with min > max or a start outside [min, max], a sine
// period that is not a positive duration.
func ParseTemplate(text []byte) (*Template, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(text, &top); err != nil || top == nil {
		if err == nil {
			err = errors.New("null")
		}
		return nil, fmt.Errorf("%w: want a JSON object: %v", ErrTemplate, err)
	}
	root, err := parseObject(top, "")
	if err != nil {
		return nil, err
	}
	return &Template{root: root}, nil
}

func parseObject(m map[string]json.RawMessage, path string) (*node, error) {
	n := &node{kind: "object"}
	for k := range m {
		n.keys = append(n.keys, k)
	}
	slices.Sort(n.keys)
	for _, k := range n.keys {
		f, err := parseValue(m[k], path+"/"+k)
		if err != nil {
			return nil, err
		}
		n.fields = append(n.fields, f)
	}
	return n, nil
}

func parseValue(raw json.RawMessage, path string) (*node, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return &node{kind: "const", literal: compact(raw)}, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrTemplate, path, err)
	}
	var gen string
	for k := range m {
		if strings.HasPrefix(k, "$") {
			gen = k
		}
	}
	if gen == "" {
		return parseObject(m, path)
	}
	if len(m) != 1 {
		return nil, fmt.Errorf("%w: %s: a generator %s must be the only key of its object", ErrTemplate, path, gen)
	}
	arg := m[gen]
	switch gen {
	case "$const":
		return &node{kind: "const", literal: compact(arg)}, nil
	case "$walk":
		var p struct{ Start, Step, Min, Max *float64 }
		if err := strictParams(arg, &p); err != nil {
			return nil, fmt.Errorf("%w: %s: $walk: %v", ErrTemplate, path, err)
		}
		if p.Start == nil || p.Step == nil {
			return nil, fmt.Errorf("%w: %s: $walk needs start and step", ErrTemplate, path)
		}
		n := &node{kind: "walk", start: *p.Start, step: math.Abs(*p.Step), min: math.Inf(-1), max: math.Inf(1)}
		if p.Min != nil {
			n.min = *p.Min
		}
		if p.Max != nil {
			n.max = *p.Max
		}
		if n.min > n.max || n.start < n.min || n.start > n.max {
			return nil, fmt.Errorf("%w: %s: $walk wants min <= start <= max", ErrTemplate, path)
		}
		return n, nil
	case "$sine":
		var p struct {
			Mean, Amplitude, Phase *float64
			Period                 *string
		}
		if err := strictParams(arg, &p); err != nil {
			return nil, fmt.Errorf("%w: %s: $sine: %v", ErrTemplate, path, err)
		}
		if p.Period == nil {
			return nil, fmt.Errorf("%w: %s: $sine needs a period such as \"60s\"", ErrTemplate, path)
		}
		d, err := time.ParseDuration(*p.Period)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("%w: %s: $sine period %q is not a positive duration", ErrTemplate, path, *p.Period)
		}
		n := &node{kind: "sine", period: d}
		if p.Mean != nil {
			n.mean = *p.Mean
		}
		if p.Amplitude != nil {
			n.amplitude = *p.Amplitude
		}
		if p.Phase != nil {
			n.phase = *p.Phase
		}
		return n, nil
	case "$counter":
		var p struct{ Start, Step *float64 }
		if err := strictParams(arg, &p); err != nil {
			return nil, fmt.Errorf("%w: %s: $counter: %v", ErrTemplate, path, err)
		}
		n := &node{kind: "counter", step: 1}
		if p.Start != nil {
			n.start = *p.Start
		}
		if p.Step != nil {
			n.step = *p.Step
		}
		return n, nil
	}
	return nil, fmt.Errorf("%w: %s: unknown generator %s (want $walk, $sine, $counter or $const)", ErrTemplate, path, gen)
}

func strictParams(arg json.RawMessage, v any) error {
	d := json.NewDecoder(bytes.NewReader(arg))
	d.DisallowUnknownFields()
	return d.Decode(v)
}

func compact(raw json.RawMessage) json.RawMessage {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return raw
	}
	return b.Bytes()
}

// Generator produces one device's telemetry from a Template. It is not
// safe for concurrent use: each device has its own.
type Generator struct {
	t     *Template
	rng   *rand.Rand
	walks map[*node]float64
	count int
	buf   []byte
}

// NewGenerator starts a generator of t whose random walks draw from seed
// (give each device its own seed so that devices differ).
func (t *Template) NewGenerator(seed uint64) *Generator {
	return &Generator{t: t, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), walks: map[*node]float64{}}
}

// Next returns the next message body as JSON (keys sorted), elapsed being
// the time since the device started (it drives the sines). Each call
// returns a new slice (a send may keep it after it returned).
func (g *Generator) Next(elapsed time.Duration) []byte {
	g.buf = g.appendNode(g.buf[:0], g.t.root, elapsed)
	g.count++
	return append([]byte(nil), g.buf...)
}

func (g *Generator) appendNode(b []byte, n *node, elapsed time.Duration) []byte {
	switch n.kind {
	case "object":
		b = append(b, '{')
		for i, k := range n.keys {
			if i > 0 {
				b = append(b, ',')
			}
			kb, _ := json.Marshal(k)
			b = append(b, kb...)
			b = append(b, ':')
			b = g.appendNode(b, n.fields[i], elapsed)
		}
		return append(b, '}')
	case "const":
		return append(b, n.literal...)
	case "walk":
		v, ok := g.walks[n]
		if !ok {
			v = n.start
		} else {
			v += (g.rng.Float64()*2 - 1) * n.step
			v = math.Min(n.max, math.Max(n.min, v))
		}
		g.walks[n] = v
		return appendFloat(b, v)
	case "sine":
		x := 2*math.Pi*float64(elapsed)/float64(n.period) + n.phase
		return appendFloat(b, n.mean+n.amplitude*math.Sin(x))
	case "counter":
		return appendFloat(b, n.start+float64(g.count)*n.step)
	}
	return append(b, "null"...)
}

// appendFloat writes v as JSON with at most 4 decimals.
func appendFloat(b []byte, v float64) []byte {
	v = math.Round(v*1e4) / 1e4
	out, err := json.Marshal(v)
	if err != nil { // NaN or Inf cannot be JSON
		return append(b, "null"...)
	}
	return append(b, out...)
}
