package emulator

import (
	"fmt"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// SharedAccessPolicy is one of the hub's shared access policies, which
// sign the SAS tokens of the IoT Hub service API (the official service
// SDKs' connection strings): iothubowner (every right), service
// (ServiceConnect), registryRead (RegistryRead) and registryReadWrite
// (RegistryRead, RegistryWrite), as on an IoT hub. Their keys are
// generated at the first start and kept in Options.DataDir when there is
// one (else new at each start).
type SharedAccessPolicy struct {
	// Name is the policy name, the SAS token's skn and the connection
	// string's SharedAccessKeyName.
	Name string
	// Rights lists the rights as the Azure portal does
	// ("RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect").
	Rights string
	// PrimaryKey and SecondaryKey are the base64 keys (64 bytes each).
	PrimaryKey, SecondaryKey string
}

// SharedAccessPolicies returns the hub's shared access policies with
// their keys, iothubowner first.
func (e *Emulator) SharedAccessPolicies() []SharedAccessPolicy {
	ps := e.core.Policies()
	out := make([]SharedAccessPolicy, len(ps))
	for i, p := range ps {
		out[i] = SharedAccessPolicy{Name: p.Name, Rights: p.Rights.String(), PrimaryKey: p.PrimaryKey, SecondaryKey: p.SecondaryKey}
	}
	return out
}

// ServiceConnectionString is the IoT Hub connection string of a policy
// ("HostName={hub host};SharedAccessKeyName={policy};SharedAccessKey={primary
// key}"), as the official service SDKs take it. The service API is
// served on the WebSocket listener (port 443 by default; the SDKs cannot
// name another port). It returns an error wrapping ErrNotFound for an
// unknown policy.
func (e *Emulator) ServiceConnectionString(policy string) (string, error) {
	for _, p := range e.core.Policies() {
		if p.Name == policy {
			return fmt.Sprintf("HostName=%s;SharedAccessKeyName=%s;SharedAccessKey=%s", e.cfg.hubHost, p.Name, p.PrimaryKey), nil
		}
	}
	return "", fmt.Errorf("%w: shared access policy %q", core.ErrNotFound, policy)
}

// DPSSharedAccessPolicy returns the Device Provisioning Service's shared
// access policy, provisioningserviceowner (every right), with its keys:
// it signs the SAS tokens of the DPS service API (the official
// provisioning service SDKs' connection strings). Its keys are generated
// at the first start and kept in Options.DataDir when there is one.
func (e *Emulator) DPSSharedAccessPolicy() SharedAccessPolicy {
	p := e.core.DPSPolicy()
	return SharedAccessPolicy{Name: p.Name, Rights: "EnrollmentRead, EnrollmentWrite, RegistrationStatusRead, RegistrationStatusWrite, ServiceConfig",
		PrimaryKey: p.PrimaryKey, SecondaryKey: p.SecondaryKey}
}

// DPSConnectionString is the DPS service connection string
// ("HostName={provisioning host};SharedAccessKeyName=provisioningserviceowner;SharedAccessKey={primary
// key}"), as the official provisioning service SDKs take it. The
// provisioning host is the hub host; the API is served on the WebSocket
// listener (port 443 by default).
func (e *Emulator) DPSConnectionString() string {
	p := e.core.DPSPolicy()
	return fmt.Sprintf("HostName=%s;SharedAccessKeyName=%s;SharedAccessKey=%s", e.cfg.hubHost, p.Name, p.PrimaryKey)
}
