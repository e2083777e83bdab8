package emulator

import (
	"net/url"
)

// DashboardURL is the address of the web dashboard on the REST listener,
// with the API token in the URL fragment so that opening it logs in (the
// browser never sends a fragment to the server); "" when the REST listener
// is disabled. Treat it as a secret, like APIToken.
func (e *Emulator) DashboardURL() string {
	if e.restURL == "" {
		return ""
	}
	return e.restURL + "/#token=" + url.PathEscape(e.cfg.apiToken)
}
