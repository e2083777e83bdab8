package devicehttp

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
	"github.com/iotc-go/iotc/emulator/internal/sas"
)

// Identity is the device (or module) a request was authenticated as.
type Identity struct {
	// DeviceID is the device; ModuleID is the module, "" for the device itself.
	DeviceID, ModuleID string
	// AuthMethod is the iothub-connection-auth-method of what it sends:
	// core.AuthMethodSAS, core.AuthMethodX509 or core.AuthMethodPolicy.
	AuthMethod string
	// Policy is the shared access policy that signed the token, "" for
	// the device's own credentials.
	Policy string
	// Expiry is the SAS token's expiry; zero for a client certificate.
	Expiry time.Time
}

// Authenticate checks request r as one of device deviceID (module moduleID
// when not ""), as IoT Hub's device HTTPS endpoints do, in this order:
//   - an "Authorization: SharedAccessSignature sr=...&sig=...&se=..." token
//     without skn, for {hub host}/devices/{deviceID}, signed with one of the
//     device's keys and not expired (the core's AuthenticateHub, fault
//     switches included);
//   - a token with skn: a shared access policy with DeviceConnect whose
//     resource is the hub host or {hub host}/devices/{deviceID}, and an
//     enabled device;
//   - with no Authorization header, the TLS client certificate chain
//     (r.TLS.PeerCertificates): an X.509 device's self-signed thumbprint or
//     a chain to its enrollment group's or the hub's CA, the leaf's CN
//     being the device id (as over MQTT).
//
// Errors wrap core.ErrUnauthorized (an unknown device included: IoT Hub
// answers 401, never telling which devices exist) and never hold the token.
// Module identities: a moduleID other than "" is refused with
// core.ErrUnauthorized until the core has module identities.
func Authenticate(c *core.Core, r *http.Request, deviceID, moduleID string) (Identity, error) {
	id := Identity{DeviceID: deviceID, ModuleID: moduleID}
	if moduleID != "" {
		return id, fmt.Errorf("%w: module identities are not supported by this emulator", core.ErrUnauthorized)
	}
	if err := core.ValidID(deviceID); err != nil {
		return id, fmt.Errorf("%w: %w", core.ErrUnauthorized, err)
	}
	token := strings.TrimSpace(r.Header.Get("Authorization"))
	if token == "" {
		certs := peerCerts(r)
		if len(certs) == 0 {
			return id, fmt.Errorf("%w: no Authorization header and no client certificate", core.ErrUnauthorized)
		}
		auth, err := c.AuthenticateHub(deviceID, "", certs)
		if err != nil {
			return id, unauthorized(err)
		}
		id.AuthMethod, id.Expiry = core.AuthMethodX509, auth.Expiry
		return id, nil
	}
	tok, err := sas.Parse(token)
	if err != nil {
		return id, fmt.Errorf("%w: the Authorization header is not a well-formed SharedAccessSignature", core.ErrUnauthorized)
	}
	if tok.KeyName == "" {
		auth, err := c.AuthenticateHub(deviceID, token, nil)
		if err != nil {
			return id, unauthorized(err)
		}
		id.AuthMethod, id.Expiry = core.AuthMethodSAS, auth.Expiry
		return id, nil
	}
	host := strings.ToLower(c.HubHost())
	res := strings.ToLower(strings.TrimSuffix(tok.Resource, "/"))
	if res != host && res != strings.ToLower(sas.HubResource(c.HubHost(), deviceID)) {
		return id, fmt.Errorf("%w: a policy token for device %q must name the hub or the device, not %q", core.ErrUnauthorized, deviceID, tok.Resource)
	}
	auth, err := c.AuthenticateService(token, core.RightDeviceConnect)
	if err != nil {
		return id, unauthorized(err)
	}
	d, err := c.Device(deviceID)
	if err != nil {
		return id, unauthorized(err)
	}
	if !d.Enabled {
		return id, fmt.Errorf("%w: device %q is disabled", core.ErrUnauthorized, deviceID)
	}
	id.AuthMethod, id.Policy, id.Expiry = core.AuthMethodPolicy, auth.Policy, auth.Expiry
	return id, nil
}

// unauthorized makes every authentication failure (unknown device, missing
// right) an ErrUnauthorized, keeping the core's reason.
func unauthorized(err error) error {
	if errors.Is(err, core.ErrUnauthorized) {
		return err
	}
	return fmt.Errorf("%w: %w", core.ErrUnauthorized, err)
}
