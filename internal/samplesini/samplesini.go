// Package samplesini reads the samples.ini file of the Python iotc
// samples: one section per device ([DEVICE_A], [DEVICE_M3], ...) with the
// keys ScopeId, DeviceId, DeviceKey, GroupKey, CertFilePath, KeyFilePath,
// CertPassphrase, ModelId and HubName, plus [FileLog] LogsPath. It is
// shared by the programs under examples/ and cmd/iotc-device.
//
// The syntax is that of Python's configparser with its defaults: "key =
// value" or "key: value", keys case-insensitive, [DEFAULT] values seen in
// every section, whole-line comments starting with ';' or '#', indented
// lines continuing the previous value. Unlike configparser, a ';' or '#'
// after whitespace starts an inline comment (the seed's own example file
// annotates values that way), and %(name)s interpolation is not done.
//
// Two keys beyond the seed's point a section at the emulator:
// ProvisioningHost (DPS host, e.g. localhost) and CAFile (a PEM file of
// CAs to trust, e.g. the emulator's ca.pem). Also read: ConnectionString
// (skips DPS), Transport (mqtt, mqttws, amqp, amqpws) and Port (of DPS
// and the hub, default the transport's).
package samplesini

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// File is a parsed ini file.
type File struct {
	// Dir is the directory of the file (relative paths in it are resolved
	// from there); "" for a reader.
	Dir      string
	sections map[string]map[string]string // lower-case key -> value
	order    []string
}

// ErrNoSection is returned (wrapped) by File.Device for a missing section.
var ErrNoSection = errors.New("samples.ini: no such section")

// Load reads and parses path. Errors name the file and line.
func Load(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ini, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	ini.Dir = filepath.Dir(path)
	return ini, nil
}

// Parse parses ini text. Errors say the line number; a key outside any
// section and a line that is neither a section, a key nor a comment are
// errors. The input is limited to 1 MiB.
func Parse(r io.Reader) (*File, error) {
	f := &File{sections: map[string]map[string]string{}}
	sc := bufio.NewScanner(io.LimitReader(r, 1<<20))
	var cur map[string]string
	var lastKey string
	for n := 1; sc.Scan(); n++ {
		raw := sc.Text()
		if n == 1 {
			raw = strings.TrimPrefix(raw, "\ufeff")
		}
		line := strings.TrimSpace(raw)
		if line == "" || line[0] == ';' || line[0] == '#' {
			lastKey = ""
			continue
		}
		if raw[0] == ' ' || raw[0] == '\t' {
			if cur == nil || lastKey == "" {
				return nil, fmt.Errorf("line %d: indented line continues no value", n)
			}
			cur[lastKey] += "\n" + stripComment(line)
			continue
		}
		if line[0] == '[' {
			end := strings.IndexByte(line, ']')
			if end < 0 {
				return nil, fmt.Errorf("line %d: section header without ']'", n)
			}
			name := strings.TrimSpace(line[1:end])
			if name == "" {
				return nil, fmt.Errorf("line %d: empty section name", n)
			}
			if _, ok := f.sections[name]; !ok {
				f.sections[name] = map[string]string{}
				f.order = append(f.order, name)
			}
			cur, lastKey = f.sections[name], ""
			continue
		}
		i := strings.IndexAny(line, "=:")
		if i <= 0 {
			return nil, fmt.Errorf("line %d: want key = value", n)
		}
		if cur == nil {
			return nil, fmt.Errorf("line %d: key before any [section]", n)
		}
		lastKey = strings.ToLower(strings.TrimSpace(line[:i]))
		cur[lastKey] = stripComment(strings.TrimSpace(line[i+1:]))
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return f, nil
}

// stripComment drops an inline comment: ';' or '#' after whitespace.
func stripComment(v string) string {
	for i := 1; i < len(v); i++ {
		if (v[i] == ';' || v[i] == '#') && (v[i-1] == ' ' || v[i-1] == '\t') {
			return strings.TrimSpace(v[:i])
		}
	}
	return v
}

// Sections lists the section names in file order, without DEFAULT.
func (f *File) Sections() []string {
	return slices.DeleteFunc(slices.Clone(f.order), func(s string) bool { return s == "DEFAULT" })
}

// Get returns key of section (case-insensitive), falling back to
// [DEFAULT]; ok is false when neither has it.
func (f *File) Get(section, key string) (string, bool) {
	key = strings.ToLower(key)
	if s, ok := f.sections[section]; ok {
		if v, ok := s[key]; ok {
			return v, true
		}
	}
	v, ok := f.sections["DEFAULT"][key]
	return v, ok
}

// HasSection reports whether the section exists.
func (f *File) HasSection(name string) bool {
	_, ok := f.sections[name]
	return ok && name != "DEFAULT"
}

// Device is one device section. Empty fields were not set.
type Device struct {
	Section          string
	ScopeID          string
	DeviceID         string
	DeviceKey        string
	GroupKey         string
	CertFile         string
	KeyFile          string
	CertPassphrase   string
	ModelID          string
	HubName          string
	ConnectionString string
	ProvisioningHost string
	CAFile           string
	Transport        string
	Port             string
}

// String describes the device without its secrets.
func (d Device) String() string {
	return fmt.Sprintf("[%s] scope=%s device=%s", d.Section, d.ScopeID, d.DeviceID)
}

// Device reads section as a device. Relative CertFilePath, KeyFilePath and
// CAFile are resolved from the file's directory. It returns an error
// wrapping ErrNoSection when the section is missing.
func (f *File) Device(section string) (Device, error) {
	if !f.HasSection(section) {
		return Device{}, fmt.Errorf("%w [%s] (sections: %s)", ErrNoSection, section, strings.Join(f.Sections(), ", "))
	}
	get := func(k string) string { v, _ := f.Get(section, k); return v }
	d := Device{
		Section:          section,
		ScopeID:          get("ScopeId"),
		DeviceID:         get("DeviceId"),
		DeviceKey:        get("DeviceKey"),
		GroupKey:         get("GroupKey"),
		CertFile:         f.path(get("CertFilePath")),
		KeyFile:          f.path(get("KeyFilePath")),
		CertPassphrase:   get("CertPassphrase"),
		ModelID:          get("ModelId"),
		HubName:          get("HubName"),
		ConnectionString: get("ConnectionString"),
		ProvisioningHost: get("ProvisioningHost"),
		CAFile:           f.path(get("CAFile")),
		Transport:        get("Transport"),
		Port:             get("Port"),
	}
	return d, nil
}

// LogsPath is [FileLog] LogsPath resolved from the file's directory, or
// "" when unset.
func (f *File) LogsPath() string {
	v, _ := f.Get("FileLog", "LogsPath")
	return f.path(v)
}

func (f *File) path(p string) string {
	if p == "" || filepath.IsAbs(p) || f.Dir == "" {
		return p
	}
	return filepath.Join(f.Dir, p)
}
