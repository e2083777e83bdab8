package samplesini

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/domain"
)

// Auth picks which credential of a section to use.
type Auth int

// The credential choices of Config.
const (
	// AuthAny takes, in order: a certificate (CertFilePath), DeviceKey,
	// GroupKey, ConnectionString.
	AuthAny Auth = iota
	// AuthDeviceKey requires DeviceKey.
	AuthDeviceKey
	// AuthGroupKey requires GroupKey.
	AuthGroupKey
	// AuthX509 requires CertFilePath and KeyFilePath.
	AuthX509
	// AuthKey takes DeviceKey, else GroupKey, as the seed's key samples
	// (a section may hold either).
	AuthKey
)

// Credential returns the section's credential as a says. Errors name the
// missing key, never a secret.
func (d Device) Credential(a Auth) (iotc.Credential, error) {
	x509Set := d.CertFile != "" || d.KeyFile != ""
	switch {
	case a == AuthX509 || a == AuthAny && x509Set:
		if d.CertFile == "" || d.KeyFile == "" {
			return iotc.Credential{}, fmt.Errorf("[%s]: X.509 needs CertFilePath and KeyFilePath", d.Section)
		}
		c := iotc.X509Files(d.CertFile, d.KeyFile, d.CertPassphrase)
		if d.ConnectionString != "" {
			return iotc.X509ConnectionString(d.ConnectionString, c), nil
		}
		return c, nil
	case a == AuthDeviceKey || (a == AuthAny || a == AuthKey) && d.DeviceKey != "":
		if d.DeviceKey == "" {
			return iotc.Credential{}, fmt.Errorf("[%s]: DeviceKey is not set", d.Section)
		}
		return iotc.DeviceKey(d.DeviceKey), nil
	case a == AuthGroupKey || (a == AuthAny || a == AuthKey) && d.GroupKey != "":
		if d.GroupKey == "" {
			return iotc.Credential{}, fmt.Errorf("[%s]: GroupKey is not set", d.Section)
		}
		return iotc.GroupKey(d.GroupKey), nil
	case a == AuthKey:
		return iotc.Credential{}, fmt.Errorf("[%s]: set DeviceKey or GroupKey", d.Section)
	case d.ConnectionString != "":
		return iotc.ConnectionString(d.ConnectionString), nil
	}
	return iotc.Credential{}, fmt.Errorf("[%s]: no credential: set DeviceKey, GroupKey, CertFilePath and KeyFilePath, or ConnectionString", d.Section)
}

// Config is an iotc.Config for the section: ID scope, device id, model id,
// credential (as a says), provisioning host, trusted CAs (the system roots
// plus CAFile) and transport. With HubName (and no ConnectionString) the
// hub is taken as cached credentials, as the seed's MemStorage does: the
// client connects to it without DPS, and provisions only if the hub
// refuses the device.
func (d Device) Config(a Auth) (iotc.Config, error) {
	cred, err := d.Credential(a)
	if err != nil {
		return iotc.Config{}, err
	}
	tr, err := ParseTransport(d.Transport)
	if err != nil {
		return iotc.Config{}, fmt.Errorf("[%s]: %w", d.Section, err)
	}
	port := 0
	if d.Port != "" {
		if port, err = strconv.Atoi(d.Port); err != nil || port < 1 || port > 65535 {
			return iotc.Config{}, fmt.Errorf("[%s]: Port %q is not a port number", d.Section, d.Port)
		}
	}
	roots, err := RootCAs(d.CAFile)
	if err != nil {
		return iotc.Config{}, fmt.Errorf("[%s]: %w", d.Section, err)
	}
	cfg := iotc.Config{
		DeviceID:         d.DeviceID,
		IDScope:          d.ScopeID,
		Credential:       cred,
		ModelID:          d.ModelID,
		Transport:        tr,
		ProvisioningHost: d.ProvisioningHost,
		RootCAs:          roots,
		Port:             port,
	}
	if d.HubName != "" && d.ConnectionString == "" {
		if d.DeviceID == "" {
			return iotc.Config{}, fmt.Errorf("[%s]: HubName needs DeviceId", d.Section)
		}
		// The kind Credential picked, in the same order.
		kind := domain.KindGroupKey
		switch {
		case a == AuthX509 || a == AuthAny && (d.CertFile != "" || d.KeyFile != ""):
			kind = domain.KindX509
		case a == AuthDeviceKey || d.DeviceKey != "":
			kind = domain.KindDeviceKey
		}
		cfg.CredentialStore = &hubStore{rec: domain.CachedCredentials{
			IDScope: d.ScopeID, RegistrationID: d.DeviceID, Hub: d.HubName, DeviceID: d.DeviceID,
			ModelID: d.ModelID, Kind: kind, CertFile: d.CertFile, KeyFile: d.KeyFile,
		}}
	}
	return cfg, nil
}

// hubStore is the seed samples' MemStorage: the credentials cache holds
// the section's HubName until a provisioning replaces it, in memory.
type hubStore struct {
	mu  sync.Mutex
	rec domain.CachedCredentials
}

func (s *hubStore) Load(context.Context) (domain.CachedCredentials, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rec, nil
}

func (s *hubStore) Save(_ context.Context, rec domain.CachedCredentials) error {
	s.mu.Lock()
	s.rec = rec
	s.mu.Unlock()
	return nil
}

// ParseTransport maps mqtt, mqttws, amqp and amqpws (any case; "" is
// mqtt) to the transport.
func ParseTransport(name string) (iotc.Transport, error) {
	if name == "" {
		return iotc.MQTT, nil
	}
	for _, t := range []iotc.Transport{iotc.MQTT, iotc.MQTTWebSockets, iotc.AMQP, iotc.AMQPWebSockets} {
		if strings.EqualFold(t.String(), name) {
			return t, nil
		}
	}
	return 0, fmt.Errorf("unknown transport %q (want mqtt, mqttws, amqp or amqpws)", name)
}

// RootCAs is the system roots plus the PEM certificates of file; nil (the
// system roots) when file is "".
func RootCAs(file string) (*x509.CertPool, error) {
	if file == "" {
		return nil, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read the CA file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(b) {
		return nil, errors.New(file + " holds no PEM certificate")
	}
	return pool, nil
}
