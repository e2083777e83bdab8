package samplesini

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/iotc-go/iotc"
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
	case a == AuthDeviceKey || a == AuthAny && d.DeviceKey != "":
		if d.DeviceKey == "" {
			return iotc.Credential{}, fmt.Errorf("[%s]: DeviceKey is not set", d.Section)
		}
		return iotc.DeviceKey(d.DeviceKey), nil
	case a == AuthGroupKey || a == AuthAny && d.GroupKey != "":
		if d.GroupKey == "" {
			return iotc.Credential{}, fmt.Errorf("[%s]: GroupKey is not set", d.Section)
		}
		return iotc.GroupKey(d.GroupKey), nil
	case d.ConnectionString != "":
		return iotc.ConnectionString(d.ConnectionString), nil
	}
	return iotc.Credential{}, fmt.Errorf("[%s]: no credential: set DeviceKey, GroupKey, CertFilePath and KeyFilePath, or ConnectionString", d.Section)
}

// Config is an iotc.Config for the section: ID scope, device id, model id,
// credential (as a says), provisioning host, trusted CAs (the system roots
// plus CAFile) and transport.
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
	return iotc.Config{
		DeviceID:         d.DeviceID,
		IDScope:          d.ScopeID,
		Credential:       cred,
		ModelID:          d.ModelID,
		Transport:        tr,
		ProvisioningHost: d.ProvisioningHost,
		RootCAs:          roots,
		Port:             port,
	}, nil
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
