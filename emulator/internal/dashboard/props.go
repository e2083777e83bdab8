package dashboard

import (
	"encoding/json"
	"fmt"
	"html/template"
	"slices"
	"strings"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// propsView is the properties section of a device page.
type propsView struct {
	DeviceID        string
	DesiredVersion  int64
	ReportedVersion int64
	Writable        []writableProp
	Reported        []reportedProp
}

// writableProp is a desired property with the device's acknowledgement.
type writableProp struct {
	Component, Name string
	Desired         string // JSON
	Version         int64  // desired version the value was set at
	Status          string // "acknowledged", "refused", "pending"
	AckCode         string
	AckVersion      string
	AckDescription  string
	Reported        string // the value the device reported with its ack
}

// reportedProp is a reported property that acknowledges no desired one.
type reportedProp struct {
	Component, Name string
	Value           string
	Updated         string
}

func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// number reads a twin number: float64 once decoded from JSON, an integer
// type when the section was built in memory.
func number(v any) (int64, bool) {
	switch n := v.(type) {
	case float64:
		return int64(n), true
	case int64:
		return n, true
	case int:
		return int64(n), true
	case json.Number:
		i, err := n.Int64()
		return i, err == nil
	default:
		return 0, false
	}
}

// propRow is one property of a twin section.
type propRow struct {
	comp, name string
	val        any
	meta       map[string]any
}

// sectionProps flattens a twin section into (component, name, value,
// metadata) rows: an object marked "__t":"c" is a component.
func sectionProps(sec map[string]any) []propRow {
	var out []propRow
	meta, _ := sec["$metadata"].(map[string]any)
	for k, v := range sec {
		if strings.HasPrefix(k, "$") {
			continue
		}
		m, _ := meta[k].(map[string]any)
		if obj, ok := v.(map[string]any); ok && core.IsComponent(v) {
			for ck, cv := range obj {
				if ck == core.ComponentMarker || strings.HasPrefix(ck, "$") {
					continue
				}
				cm, _ := m[ck].(map[string]any)
				out = append(out, propRow{k, ck, cv, cm})
			}
			continue
		}
		out = append(out, propRow{"", k, v, m})
	}
	slices.SortFunc(out, func(a, b propRow) int {
		if c := strings.Compare(a.comp, b.comp); c != 0 {
			return c
		}
		return strings.Compare(a.name, b.name)
	})
	return out
}

func (h *Handler) props(id string) (propsView, error) {
	desired, reported, err := h.b.Twin(id)
	if err != nil {
		return propsView{}, err
	}
	pv := propsView{DeviceID: id}
	pv.DesiredVersion, _ = number(desired["$version"])
	pv.ReportedVersion, _ = number(reported["$version"])
	type key struct{ c, n string }
	reportedRows := sectionProps(reported)
	rep := map[key]any{}
	for _, r := range reportedRows {
		rep[key{r.comp, r.name}] = r.val
	}
	acked := map[key]bool{}
	for _, d := range sectionProps(desired) {
		wp := writableProp{Component: d.comp, Name: d.name, Desired: jsonText(d.val), Version: pv.DesiredVersion, Status: "pending"}
		if v, ok := number(d.meta["$lastUpdatedVersion"]); ok {
			wp.Version = v
		}
		if ack, ok := rep[key{d.comp, d.name}].(map[string]any); ok {
			if _, isAck := ack["ac"]; isAck {
				acked[key{d.comp, d.name}] = true
				ac, _ := number(ack["ac"])
				av, hasAV := number(ack["av"])
				wp.AckCode = fmt.Sprint(ac)
				if hasAV {
					wp.AckVersion = fmt.Sprint(av)
				}
				if s, ok := ack["ad"].(string); ok {
					wp.AckDescription = s
				}
				wp.Reported = jsonText(ack["value"])
				switch {
				case hasAV && av < wp.Version:
					wp.Status = "pending"
				case ac >= 200 && ac < 300:
					wp.Status = "acknowledged"
				default:
					wp.Status = "refused"
				}
			}
		}
		pv.Writable = append(pv.Writable, wp)
	}
	for _, r := range reportedRows {
		if acked[key{r.comp, r.name}] {
			continue
		}
		rp := reportedProp{Component: r.comp, Name: r.name, Value: jsonText(r.val)}
		if s, ok := r.meta["$lastUpdated"].(string); ok {
			rp.Updated = s
		}
		pv.Reported = append(pv.Reported, rp)
	}
	return pv, nil
}

var funcs = template.FuncMap{
	"ago":       stamp,
	"eventText": eventText,
	"iso": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	},
	"clock": func(t time.Time) string { return t.UTC().Format("15:04:05.000") },
	"yesno": func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	},
}

// stamp formats a time for the pages ("never" for the zero time).
func stamp(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}
