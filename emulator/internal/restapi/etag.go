package restapi

import (
	"errors"
	"net/http"
	"strings"
)

// ErrPreconditionFailed reports a change whose If-Match header or body
// "etag" names another version of the resource than the current one (or
// any version of a resource that does not exist); answered 412
// PreconditionFailed. Only the HTTP layer makes it: etags are computed
// here from the stored representation, not kept by the backend.
var ErrPreconditionFailed = errors.New("restapi: precondition failed")

// conditional reports whether a write must be checked against the
// current etag: it carries If-Match or a non-empty body etag.
func conditional(r *http.Request, bodyEtag string) bool {
	return r.Header.Get("If-Match") != "" || bodyEtag != ""
}

// checkEtag applies the preconditions of a write to a resource whose
// current etag is current (exists false: the resource does not exist):
//   - If-Match: "*" matches any existing resource, a list of entity tags
//     matches when one is the current one (a weak W/ prefix is ignored);
//     against a resource that does not exist it always fails.
//   - a non-empty "etag" in the body must be the current one when the
//     resource exists (on create it is ignored: a body copied from
//     elsewhere creates the resource).
//
// It returns an error wrapping ErrPreconditionFailed otherwise.
func checkEtag(r *http.Request, current string, exists bool, bodyEtag string) error {
	if im := strings.TrimSpace(r.Header.Get("If-Match")); im != "" {
		if !exists {
			return errorf(ErrPreconditionFailed, "If-Match %s: the resource does not exist", im)
		}
		ok := false
		for _, tag := range strings.Split(im, ",") {
			tag = strings.TrimPrefix(strings.TrimSpace(tag), "W/")
			if tag == "*" || tag == current {
				ok = true
				break
			}
		}
		if !ok {
			return errorf(ErrPreconditionFailed, "If-Match %s does not match the current etag %s", im, current)
		}
	}
	if bodyEtag != "" && exists && strings.TrimPrefix(bodyEtag, "W/") != current {
		return errorf(ErrPreconditionFailed, "etag %s in the body does not match the current etag %s", bodyEtag, current)
	}
	return nil
}

// guard runs write under the handler's conditional-write lock when the
// request is conditional, after check (which reads the current state and
// calls checkEtag) succeeds; unconditional writes run unlocked. The lock
// makes compare-and-write atomic among REST requests; a change through
// another front-end (a device, the dashboard) between the two is not
// seen (etags are computed here, not kept by the core).
func (h *handler) guard(r *http.Request, bodyEtag string, check func() error, write func() error) error {
	if conditional(r, bodyEtag) {
		h.condMu.Lock()
		defer h.condMu.Unlock()
		if err := check(); err != nil {
			return err
		}
	}
	return write()
}
