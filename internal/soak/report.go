package soak

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// Write prints the report as a small table: per path and in total sent,
// acknowledged, received, lost, duplicated, failed; recovery per fault
// kind (p50, max); the outbox, goroutines and heap; and, when there are
// any, the errors and samples of lost and duplicated messages.
func (r Report) Write(w io.Writer) error {
	var b strings.Builder
	verdict := "clean"
	if !r.Clean() {
		verdict = "NOT CLEAN"
	}
	fmt.Fprintf(&b, "== %s: %d devices, %v: %s\n", r.Transport, r.Devices, r.Duration, verdict)
	fmt.Fprintf(&b, "  %-8s %8s %8s %9s %5s %11s %6s %7s %6s\n", "path", "sent", "acked", "received", "lost", "duplicated", "new-id", "failed", "extra")
	row := func(name string, c Counts) {
		fmt.Fprintf(&b, "  %-8s %8d %8d %9d %5d %11d %6d %7d %6d\n", name, c.Sent, c.Acked, c.Received, c.Lost, c.Duplicated, c.NewID, c.Failed, c.Extra)
	}
	row("send", r.ByPath[PathSend])
	row("enqueue", r.ByPath[PathEnqueue])
	row("total", r.Total)
	kinds := map[string]bool{}
	for _, rc := range r.Recoveries {
		kinds[rc.Kind] = true
	}
	names := make([]string, 0, len(kinds))
	for k := range kinds {
		names = append(names, k)
	}
	sort.Strings(names)
	ms := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	for _, k := range append(names, "") {
		n, p50, mx, un := RecoveryStats(r.Recoveries, k)
		label := k
		if k == "" {
			label = "all"
		}
		fmt.Fprintf(&b, "  recovery %-9s faults=%-3d p50=%-8s max=%-8s unrecovered=%d inject_max=%s\n", label, n+un, ms(p50), ms(mx), un, ms(MaxInject(r.Recoveries, k)))
	}
	fmt.Fprintf(&b, "  outbox delivered=%d expired=%d rejected=%d left=%d; connects=%d restarts=%d drain=%v\n",
		r.OutboxDelivered, r.OutboxExpired, r.OutboxRejected, r.OutboxLeft, r.Connects, r.Restarts, r.DrainTook.Round(time.Millisecond))
	fmt.Fprintf(&b, "  goroutines before=%d after=%d; heap before=%.1f MiB after=%.1f MiB\n",
		r.GoroutinesBefore, r.GoroutinesAfter, float64(r.HeapBefore)/(1<<20), float64(r.HeapAfter)/(1<<20))
	errs := make([]string, 0, len(r.Errors))
	for e := range r.Errors {
		errs = append(errs, e)
	}
	sort.Strings(errs)
	for _, e := range errs {
		fmt.Fprintf(&b, "  error x%d: %s\n", r.Errors[e], e)
	}
	for _, m := range r.LostSample {
		fmt.Fprintf(&b, "  lost: device %d %s seq %d\n", m.Device, m.Path, m.Seq)
	}
	for _, m := range r.DupSample {
		fmt.Fprintf(&b, "  duplicated: device %d %s seq %d\n", m.Device, m.Path, m.Seq)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
