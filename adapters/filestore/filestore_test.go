package filestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"go.uber.org/goleak"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

func record(i int) domain.CachedCredentials {
	return domain.CachedCredentials{
		IDScope:        "0ne0000TEST",
		RegistrationID: fmt.Sprintf("dev-%d", i),
		Hub:            "hub.example.net",
		DeviceID:       fmt.Sprintf("dev-%d", i),
		ModelID:        "dtmi:com:example:Thermostat;1",
		Kind:           domain.KindX509,
		CertFile:       "/etc/dev/cert.pem",
		KeyFile:        "/etc/dev/key.pem",
		Saved:          time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

func logBuffer() (*slog.Logger, *syncBuffer) {
	var b syncBuffer
	return slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug})), &b
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRoundTripAndMode(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "sub", "creds.json")
	s := New(path, nil)
	ctx := context.Background()
	if _, err := s.Load(ctx); !errors.Is(err, ports.ErrNoCredentials) {
		t.Fatalf("Load of a missing file = %v, want ErrNoCredentials", err)
	}
	want := record(1)
	if err := s.Save(ctx, want); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("Load = %+v, want %+v", got, want)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != FileMode {
		t.Fatalf("mode = %v, want %v", st.Mode().Perm(), FileMode)
	}
	if s.Path() != path {
		t.Fatalf("Path = %q", s.Path())
	}
}

func TestSaveTightensExistingPermissions(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "creds.json")
	if err := os.WriteFile(path, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := New(path, nil).Save(context.Background(), record(2)); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != FileMode {
		t.Fatalf("mode after Save over a 0644 file = %v, want %v", st.Mode().Perm(), FileMode)
	}
}

func TestCorruptFileIsNoCredentialsAndReplaced(t *testing.T) {
	t.Parallel()
	cases := map[string][]byte{
		"garbage":    []byte("\x00\xffnot json"),
		"truncated":  []byte(`{"hub":"h","deviceId":`),
		"trailing":   []byte(`{"hub":"h","deviceId":"d"} {"x":1}`),
		"incomplete": []byte(`{"idScope":"0ne","hub":""}`),
		"wrong type": []byte(`{"hub":1,"deviceId":"d"}`),
		"array":      []byte(`[1,2,3]`),
		"empty":      {},
		"oversize":   append([]byte(`{"hub":"h","deviceId":"d","modelId":"`), append(bytes.Repeat([]byte("a"), MaxFileSize), '"', '}')...),
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "creds.json")
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			log, buf := logBuffer()
			s := New(path, log)
			_, err := s.Load(context.Background())
			if !errors.Is(err, ports.ErrNoCredentials) {
				t.Fatalf("Load = %v, want ErrNoCredentials", err)
			}
			if !strings.Contains(buf.String(), "level=WARN") {
				t.Fatalf("no warning logged; log = %q", buf.String())
			}
			if err := s.Save(context.Background(), record(3)); err != nil {
				t.Fatal(err)
			}
			got, err := s.Load(context.Background())
			if err != nil || got != record(3) {
				t.Fatalf("after Save, Load = %+v, %v", got, err)
			}
		})
	}
}

func TestUnreadableIsNoCredentials(t *testing.T) {
	t.Parallel()
	// A directory where the file should be cannot be read as a file
	// (root ignores permission bits, so chmod 000 would not do).
	path := filepath.Join(t.TempDir(), "creds.json")
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	log, buf := logBuffer()
	_, err := New(path, log).Load(context.Background())
	if !errors.Is(err, ports.ErrNoCredentials) {
		t.Fatalf("Load = %v, want ErrNoCredentials", err)
	}
	if !strings.Contains(buf.String(), "unreadable") {
		t.Fatalf("no warning logged; log = %q", buf.String())
	}
}

func TestSaveErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := context.Background()
	if err := New(filepath.Join(dir, "a.json"), nil).Save(ctx, domain.CachedCredentials{Hub: "h"}); !errors.Is(err, domain.ErrInvalidConfig) {
		t.Fatalf("Save of an incomplete record = %v, want ErrInvalidConfig", err)
	}
	blocker := filepath.Join(dir, "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := New(filepath.Join(blocker, "creds.json"), nil).Save(ctx, record(1)); err == nil {
		t.Fatal("Save under a regular file succeeded")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := New(filepath.Join(dir, "b.json"), nil).Save(cctx, record(1)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Save with a cancelled context = %v", err)
	}
	if _, err := New(filepath.Join(dir, "b.json"), nil).Load(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Load with a cancelled context = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "b.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("cancelled Save created the file: %v", err)
	}
}

func TestConcurrentSaves(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "creds.json")
	const n = 20
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Separate stores: as if several processes shared the file.
			if err := New(path, nil).Save(context.Background(), record(i)); err != nil {
				t.Error(err)
			}
		}()
	}
	saved := make(chan struct{})
	go func() { wg.Wait(); close(saved) }()
	select {
	case <-saved:
	case <-time.After(time.Minute):
		t.Fatal("concurrent saves did not all return within a minute")
	}
	got, err := New(path, nil).Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for i := range n {
		found = found || got == record(i)
	}
	if !found {
		t.Fatalf("Load = %+v, not one of the saved records", got)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("directory holds %v, want only the credentials file", names)
	}
}

// FuzzDecode saves a record made of fuzzed fields with Store.Save, reads
// the file back with Decode and Load and checks every field; and decodes
// fuzzed bytes, saves what was accepted and checks that it decodes the same.
func FuzzDecode(f *testing.F) {
	f.Add("0ne", "r", "h", "d", "dtmi:x;1", 1, "", "", int64(1735689600), int64(0),
		[]byte(`{"idScope":"0ne","registrationId":"r","hub":"h","deviceId":"d","kind":1,"saved":"2025-01-01T00:00:00Z"}`))
	f.Add("0NE00ABCDEF", "Dev-1.A", "hub.example.net", "Dev-1.A", "", 3, "/etc/c \"q\".pem", "k\n.pem", int64(-62135596800), int64(999999999),
		[]byte(`{"hub":"h","deviceId":"d","saved":"not a time"}`))
	f.Add("", "", "", "", "", 0, "", "", int64(0), int64(0), []byte(`null`))
	f.Add(" 0ne ", "rég 1", " h\t", "d\u2028", " dtmi:x;1 ", 2, "C:\\certs\\c.pem ", "", int64(1), int64(123456789), []byte(`{"hub":" h ","deviceId":"d","modelId":"\u00e9 ","saved":"2025-01-01T00:00:00.5+02:00"}`))
	f.Add("s", "r", "h", "d", "<&>", -7, "", "", int64(253402300799), int64(1), []byte(`{"hub":"h","deviceId":"d"}garbage`))
	f.Fuzz(func(t *testing.T, scope, reg, hub, dev, model string, kind int, certFile, keyFile string, sec, nsec int64, b []byte) {
		ctx := context.Background()
		dir := t.TempDir()
		// Encode (Save) -> decode.
		const minSec, maxSec = -62135596800, 253402300799 // years 1..9999, what JSON times hold
		sec = minSec + (sec%(maxSec-minSec)+(maxSec-minSec))%(maxSec-minSec)
		in := domain.CachedCredentials{
			IDScope: scope, RegistrationID: reg, Hub: hub, DeviceID: dev, ModelID: model,
			Kind: domain.CredentialKind(kind), CertFile: certFile, KeyFile: keyFile,
			Saved: time.Unix(sec, (nsec%1e9+1e9)%1e9).UTC(),
		}
		texts := []string{scope, reg, hub, dev, model, certFile, keyFile}
		allUTF8 := true
		for _, s := range texts {
			allUTF8 = allUTF8 && utf8.ValidString(s)
		}
		st := New(filepath.Join(dir, "a.json"), nil)
		err := st.Save(ctx, in)
		switch {
		case !in.Valid():
			if !errors.Is(err, domain.ErrInvalidConfig) {
				t.Fatalf("Save(%+v) = %v, want ErrInvalidConfig", in, err)
			}
		case err != nil:
			t.Fatalf("Save(%+v): %v", in, err)
		case allUTF8: // JSON replaces invalid UTF-8, so only valid text round-trips
			raw, err := os.ReadFile(st.Path())
			if err != nil {
				t.Fatal(err)
			}
			out, err := Decode(raw)
			if err != nil {
				t.Fatalf("Decode(Save(%+v)): %v\n%s", in, err, raw)
			}
			if !sameRecord(out, in) {
				t.Fatalf("round trip changed\n %+v\ninto\n %+v", in, out)
			}
			loaded, err := st.Load(ctx)
			if err != nil || !sameRecord(loaded, in) {
				t.Fatalf("Load = %+v, %v; want %+v", loaded, err, in)
			}
		}
		// Decode -> encode (Save) -> decode.
		c, err := Decode(b)
		if err != nil {
			if !errors.Is(err, domain.ErrMalformed) {
				t.Fatalf("Decode error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if !c.Valid() {
			t.Fatalf("Decode accepted an invalid record %+v", c)
		}
		st2 := New(filepath.Join(dir, "b.json"), nil)
		if err := st2.Save(ctx, c); err != nil {
			t.Fatalf("Save(Decode(%q)): %v", b, err)
		}
		again, err := st2.Load(ctx)
		if err != nil || !sameRecord(again, c) {
			t.Fatalf("Decode(%q) = %+v; saved and loaded: %+v, %v", b, c, again, err)
		}
	})
}

// sameRecord compares records field by field (times with Equal).
func sameRecord(a, b domain.CachedCredentials) bool {
	sa, sb := a.Saved, b.Saved
	a.Saved, b.Saved = time.Time{}, time.Time{}
	return a == b && sa.Equal(sb)
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
