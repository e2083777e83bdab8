package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(ChildEnv) == "1" { // this test binary as the emulator child of TestChildEmulator
		if err := ServeChild(context.Background(), os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

const testTemplate = `{
  "walk":    {"$walk": {"start": 10, "step": 1, "min": 9, "max": 11}},
  "sine":    {"$sine": {"mean": 50, "amplitude": 10, "period": "4s"}},
  "count":   {"$counter": {"start": 5, "step": 2}},
  "status":  "ok",
  "fixed":   {"$const": {"a": [1, 2]}},
  "nested":  {"inner": {"$counter": {}}, "label": "x"}
}`

type testMsg struct {
	Walk   float64
	Sine   float64
	Count  float64
	Status string
	Fixed  struct{ A []int }
	Nested struct {
		Inner float64
		Label string
	}
}

func generate(t *testing.T, g *Generator, n int, step time.Duration) []testMsg {
	t.Helper()
	var out []testMsg
	for i := range n {
		var m testMsg
		body := g.Next(time.Duration(i) * step)
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("message %d %s: %v", i, body, err)
		}
		out = append(out, m)
	}
	return out
}

func TestTemplateValues(t *testing.T) {
	tmpl, err := ParseTemplate([]byte(testTemplate))
	if err != nil {
		t.Fatal(err)
	}
	msgs := generate(t, tmpl.NewGenerator(7), 200, time.Second)
	wantSine := []float64{50, 60, 50, 40}
	moved := false
	for i, m := range msgs {
		if m.Count != 5+2*float64(i) {
			t.Errorf("message %d: counter %v, want %v", i, m.Count, 5+2*i)
		}
		if m.Nested.Inner != float64(i) || m.Nested.Label != "x" {
			t.Errorf("message %d: nested %+v", i, m.Nested)
		}
		if math.Abs(m.Sine-wantSine[i%4]) > 1e-3 {
			t.Errorf("message %d (t=%ds): sine %v, want %v", i, i, m.Sine, wantSine[i%4])
		}
		if m.Status != "ok" || !slices.Equal(m.Fixed.A, []int{1, 2}) {
			t.Errorf("message %d: constants %q %v", i, m.Status, m.Fixed.A)
		}
		if m.Walk < 9 || m.Walk > 11 {
			t.Errorf("message %d: walk %v outside [9, 11]", i, m.Walk)
		}
		if i == 0 && m.Walk != 10 {
			t.Errorf("walk starts at %v, want 10", m.Walk)
		}
		if i > 0 {
			d := math.Abs(m.Walk - msgs[i-1].Walk)
			if d > 1+1e-3 {
				t.Errorf("message %d: walk moved by %v, more than its step 1", i, d)
			}
			if d > 0 {
				moved = true
			}
		}
	}
	if !moved {
		t.Error("the random walk never moved")
	}

	same := generate(t, tmpl.NewGenerator(7), 200, time.Second)
	other := generate(t, tmpl.NewGenerator(8), 200, time.Second)
	if !slices.Equal(walks(msgs), walks(same)) {
		t.Error("the same seed gave a different walk")
	}
	if slices.Equal(walks(msgs), walks(other)) {
		t.Error("two seeds gave the same walk: devices would all send the same values")
	}
}

func walks(ms []testMsg) []float64 {
	var out []float64
	for _, m := range ms {
		out = append(out, m.Walk)
	}
	return out
}

func TestDefaultTemplate(t *testing.T) {
	tmpl, err := ParseTemplate([]byte(DefaultTemplate))
	if err != nil {
		t.Fatal(err)
	}
	g := tmpl.NewGenerator(1)
	first := g.Next(0)
	var m map[string]any
	if err := json.Unmarshal(first, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"temperature", "humidity", "status", "seq"} {
		if _, ok := m[k]; !ok {
			t.Errorf("default template message %s lacks %q", first, k)
		}
	}
	second := g.Next(time.Second)
	if string(first) == string(second) {
		t.Errorf("two messages are the same: %s", first)
	}
	if &first[0] == &second[0] {
		t.Error("Next reuses its slice")
	}
}

func TestTemplateErrors(t *testing.T) {
	for _, text := range []string{
		``, `[]`, `null`, `"x"`, `{"a": }`,
		`{"a": {"$nope": 1}}`,
		`{"a": {"$walk": {"step": 1}}}`,
		`{"a": {"$walk": {"start": 1}}}`,
		`{"a": {"$walk": {"start": 5, "step": 1, "min": 6}}}`,
		`{"a": {"$walk": {"start": 5, "step": 1, "min": 6, "max": 2}}}`,
		`{"a": {"$walk": {"start": "x", "step": 1}}}`,
		`{"a": {"$walk": {"start": 1, "step": 1, "stpe": 1}}}`,
		`{"a": {"$sine": {"mean": 1}}}`,
		`{"a": {"$sine": {"period": "0s"}}}`,
		`{"a": {"$sine": {"period": "soon"}}}`,
		`{"a": {"$counter": {"start": 1}, "b": 2}}`,
		`{"a": {"$counter": 3}}`,
		`{"a": {"b": {"$sine": {}}}}`,
	} {
		if _, err := ParseTemplate([]byte(text)); !errors.Is(err, ErrTemplate) {
			t.Errorf("ParseTemplate(%s) = %v, want ErrTemplate", text, err)
		}
	}
}

func TestDeviceIDs(t *testing.T) {
	ids, err := deviceIDs("dev-%03d", 8, 3)
	if err != nil || !slices.Equal(ids, []string{"dev-008", "dev-009", "dev-010"}) {
		t.Fatalf("deviceIDs = %v, %v", ids, err)
	}
	if ids, err := deviceIDs("v%%-%x", 10, 2); !errors.Is(err, ErrConfig) { // '%' is not a device id character
		t.Errorf("deviceIDs(v%%%%-%%x) = %v, %v, want ErrConfig", ids, err)
	}
	if ids, err := deviceIDs("x%02x", 254, 2); err != nil || !slices.Equal(ids, []string{"xfe", "xff"}) {
		t.Errorf("deviceIDs(x%%02x) = %v, %v", ids, err)
	}
	if _, err := New(Config{Devices: 0, Target: Target{IDScope: "s", GroupKey: "aGk="}}); !errors.Is(err, ErrConfig) {
		t.Errorf("New with 0 devices = %v, want ErrConfig", err)
	}
	if _, err := New(Config{Devices: 1}); !errors.Is(err, ErrConfig) {
		t.Errorf("New without a target = %v, want ErrConfig", err)
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	for i := 1; i <= 1000; i++ {
		h.Observe(time.Duration(i) * time.Millisecond)
	}
	s := h.Snapshot()
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {1, time.Second}} {
		got := s.Quantile(c.q)
		if math.Abs(float64(got-c.want))/float64(c.want) > 0.02 {
			t.Errorf("p%v = %s, want %s within 2%%", c.q*100, got, c.want)
		}
	}
	if s.Count() != 1000 || s.Max != time.Second {
		t.Errorf("count %d max %s", s.Count(), s.Max)
	}
	for range 10 {
		h.Observe(5 * time.Second)
	}
	w := h.Snapshot().Sub(s)
	if w.Count() != 10 || math.Abs(float64(w.Quantile(0.5)-5*time.Second)) > 0.02*float64(5*time.Second) {
		t.Errorf("window: count %d p50 %s", w.Count(), w.Quantile(0.5))
	}
	var empty HistSnapshot
	if empty.Quantile(0.5) != 0 {
		t.Error("empty histogram has a p50")
	}
}

// TestLimiterRamp checks, on synctest's fake clock, that a 10/s limiter
// spaces 25 concurrent callers 100 ms apart with no burst.
func TestLimiterRamp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewLimiter(10)
		start := time.Now()
		var mu sync.Mutex
		var at []time.Duration
		var wg sync.WaitGroup
		for range 25 {
			wg.Go(func() {
				if err := l.Wait(context.Background()); err != nil {
					t.Error(err)
				}
				mu.Lock()
				at = append(at, time.Since(start))
				mu.Unlock()
			})
		}
		wg.Wait()
		slices.Sort(at)
		for i, d := range at {
			if want := time.Duration(i) * 100 * time.Millisecond; d != want {
				t.Errorf("caller %d went at %s, want %s", i, d, want)
			}
		}
	})
}

func TestLimiterCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewLimiter(1)
		if err := l.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if err := l.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Wait = %v, want DeadlineExceeded", err)
		}
		// The cancelled caller's slot is given back: the next one goes at 1 s.
		start := time.Now()
		if err := l.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != 900*time.Millisecond {
			t.Errorf("next caller waited %s, want 900ms", d)
		}
		var none *Limiter
		if err := none.Wait(context.Background()); err != nil || NewLimiter(0) != nil {
			t.Error("no limit should never wait")
		}
	})
}
