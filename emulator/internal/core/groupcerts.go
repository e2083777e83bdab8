package core

import (
	"fmt"
	"slices"
	"strings"
)

// maxVerificationCodes is how many outstanding verification codes one
// certificate entry keeps (older ones expire).
const maxVerificationCodes = 4

// IssueVerificationCode returns a new proof-of-possession code for the
// certificate entry ("primary" or "secondary") of group id. It returns
// ErrNotFound for an unknown group.
func (c *Core) IssueVerificationCode(group, entry string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.group(group); !ok {
		return "", fmt.Errorf("%w: enrollment group %q", ErrNotFound, group)
	}
	code := strings.ToUpper(RandomHex(24))
	if c.ext.verifying == nil {
		c.ext.verifying = map[string]map[string][]string{}
	}
	if c.ext.verifying[group] == nil {
		c.ext.verifying[group] = map[string][]string{}
	}
	codes := append(c.ext.verifying[group][entry], code)
	if len(codes) > maxVerificationCodes {
		codes = codes[len(codes)-maxVerificationCodes:]
	}
	c.ext.verifying[group][entry] = codes
	return code, nil
}

// ConsumeVerificationCode checks that code was issued for the entry of
// group and not used yet, and marks the certificate with thumbprint as
// verified. It returns ErrNotFound for an unknown group and ErrInvalid for
// an unknown code.
func (c *Core) ConsumeVerificationCode(group, entry, code, thumbprint string) error {
	staged, err := c.consumeVerificationCode(group, entry, code, thumbprint)
	if err != nil {
		return err
	}
	return awaitNow(staged)
}

func (c *Core) consumeVerificationCode(group, entry, code, thumbprint string) (<-chan error, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.group(group); !ok {
		return nil, fmt.Errorf("%w: enrollment group %q", ErrNotFound, group)
	}
	codes := c.ext.verifying[group][entry]
	i := slices.Index(codes, code)
	if i < 0 {
		return nil, fmt.Errorf("%w: the certificate's subject CN is not a verification code issued for the %s certificate of group %q", ErrInvalid, entry, group)
	}
	c.ext.verifying[group][entry] = slices.Delete(codes, i, i+1)
	c.ext.markVerified(group, thumbprint)
	return c.stageLocked(Change{Op: OpPut, Record: Record{Kind: KindCert, Key: group + "/" + thumbprint,
		Doc: mustJSON(certDoc{Group: group, Thumbprint: thumbprint})}}), nil
}

// markVerified records a proven certificate; Core.mu held.
func (x *extState) markVerified(group, thumbprint string) {
	if x.verified == nil {
		x.verified = map[string]map[string]bool{}
	}
	if x.verified[group] == nil {
		x.verified[group] = map[string]bool{}
	}
	x.verified[group][thumbprint] = true
}

// CertificateVerified reports whether the certificate with thumbprint
// was proven (ConsumeVerificationCode) for group.
func (c *Core) CertificateVerified(group, thumbprint string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ext.verified[group][thumbprint]
}
