package netlimit

import (
	"bytes"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestQuoteTruncatesAndEscapes(t *testing.T) {
	q := Quote("a\nb")
	if q != `"a\nb"` {
		t.Errorf("Quote = %s", q)
	}
	long := Quote(strings.Repeat("é", 100))
	if len(long) > MaxQuoted+8 || !strings.HasSuffix(long, "…") {
		t.Errorf("Quote(long) = %s (%d bytes)", long, len(long))
	}
}

func TestListenerCap(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := make(chan struct{}, 10)
	l := NewListener(ln, 2, func() { refused <- struct{}{} })
	defer l.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	var clients []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	for _, ch := range []<-chan net.Conn{accepted, accepted} {
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatal("connection under the cap not accepted")
		}
	}
	select {
	case <-refused: // the third is closed at once
	case <-time.After(5 * time.Second):
		t.Fatal("connection over the cap not refused")
	}
	if n := l.Open(); n != 2 {
		t.Errorf("Open = %d, want 2", n)
	}
	// The refused client sees EOF.
	buf := make([]byte, 1)
	_ = clients[2].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := clients[2].Read(buf); err == nil {
		t.Error("third connection still open")
	}
}

func TestFailLimiter(t *testing.T) {
	f := &FailLimiter{Max: 3, Window: time.Hour}
	for range 3 {
		if b, _ := f.Blocked("a"); b {
			t.Fatal("blocked too early")
		}
		f.Failed("a")
	}
	if b, _ := f.Blocked("a"); !b {
		t.Error("not blocked after 3 failures")
	}
	if b, _ := f.Blocked("b"); b {
		t.Error("other client blocked")
	}
	small := &FailLimiter{Max: 1, Window: time.Hour, MaxClients: 2}
	for _, c := range []string{"x", "y", "z"} {
		small.Failed(c)
	}
	if len(small.m) > 2 {
		t.Errorf("remembers %d clients, cap 2", len(small.m))
	}
}

func TestBudget(t *testing.T) {
	b := &Budget{Max: 10}
	if !b.Reserve(6) || b.Reserve(5) || !b.Reserve(4) {
		t.Fatal("reservations wrong")
	}
	b.Release(10)
	if b.Used() != 0 {
		t.Errorf("Used = %d", b.Used())
	}
}

func TestReporterSummarises(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	r := NewReporter(log, time.Hour)
	for range 10000 {
		r.Refused(KindMQTTAuth, "connection refused", "client_id", Quote("evil\nINFO fake line"))
	}
	r.Close()
	lines := strings.Count(buf.String(), "\n")
	if lines != 1 || !strings.Contains(buf.String(), "mqtt_auth=10000") || strings.Contains(buf.String(), "evil") {
		t.Errorf("%d lines:\n%s", lines, buf.String())
	}
	if got := r.Refusals.Snapshot()[KindMQTTAuth]; got != 10000 {
		t.Errorf("counter = %d", got)
	}
}

func TestAuthGuardRateLimitsFailures(t *testing.T) {
	fl := &FailLimiter{Max: 2, Window: time.Hour}
	h := AuthGuard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "ok" {
			http.Error(w, "no", http.StatusUnauthorized)
		}
	}), fl, nil, KindRESTAuth)
	codes := []int{}
	for _, auth := range []string{"bad", "bad", "bad", "ok"} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/", nil)
		req.Header.Set("Authorization", auth)
		h.ServeHTTP(rec, req)
		codes = append(codes, rec.Code)
	}
	want := []int{401, 401, 429, 429}
	for i := range want {
		if codes[i] != want[i] {
			t.Fatalf("codes = %v, want %v", codes, want)
		}
	}
}
