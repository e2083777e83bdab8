package blob

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Permission letters of a service SAS.
const (
	PermRead   = 'r'
	PermAdd    = 'a'
	PermCreate = 'c'
	PermWrite  = 'w'
	PermDelete = 'd'
	PermList   = 'l'
)

// errAuth is an authorization failure (403 AuthenticationFailed); errPerm
// a valid token that lacks the permission (403
// AuthorizationPermissionMismatch). Their text never holds a signature.
var (
	errAuth = errors.New("authentication failed")
	errPerm = errors.New("this request is not authorized to perform this operation using this permission")
)

// request is what authorization needs to know of a request.
type request struct {
	account, container, blob string
	// perm is the SAS permission the operation needs; alt another that
	// also grants it (0: none).
	perm, alt byte
	// containerOp is an operation on the container itself (create,
	// list): a blob-scoped SAS cannot grant it, a container SAS must.
	containerOp bool
	// accountOnly needs Shared Key (container creation).
	accountOnly bool
}

// authorize checks the request's Shared Key header or its service SAS.
func (s *Server) authorize(r *http.Request, rq request) error {
	if h := r.Header.Get("Authorization"); h != "" {
		return s.checkSharedKey(r, h, rq)
	}
	q := r.URL.Query()
	if q.Get("sig") != "" {
		if rq.accountOnly {
			return fmt.Errorf("%w: the operation needs Shared Key authorization", errPerm)
		}
		return s.checkSAS(q, rq, time.Now())
	}
	return fmt.Errorf("%w: no Authorization header and no SAS", errAuth)
}

// checkSharedKey verifies "SharedKey account:signature" over the string
// to sign of the Blob service (version 2015-02-21 and later).
func (s *Server) checkSharedKey(r *http.Request, h string, rq request) error {
	v, ok := strings.CutPrefix(h, "SharedKey ")
	if !ok {
		return fmt.Errorf("%w: the Authorization header is not SharedKey", errAuth)
	}
	acct, sig, ok := strings.Cut(v, ":")
	if !ok || acct != s.account || acct != rq.account {
		return fmt.Errorf("%w: the Shared Key does not name account %s", errAuth, s.account)
	}
	want := s.sign(stringToSign(r, acct))
	if !hmac.Equal([]byte(sig), []byte(want)) {
		return fmt.Errorf("%w: the Shared Key signature does not match", errAuth)
	}
	return nil
}

func (s *Server) sign(str string) string {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(str))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// stringToSign is the Shared Key string to sign of a Blob service request.
func stringToSign(r *http.Request, account string) string {
	h := r.Header
	cl := h.Get("Content-Length")
	if cl == "" && r.ContentLength > 0 {
		cl = strconv.FormatInt(r.ContentLength, 10)
	}
	if cl == "0" {
		cl = ""
	}
	date := h.Get("Date")
	if h.Get("x-ms-date") != "" {
		date = ""
	}
	var names []string
	canon := map[string][]string{}
	for k, vs := range h {
		n := strings.ToLower(strings.TrimSpace(k))
		if strings.HasPrefix(n, "x-ms-") {
			if _, ok := canon[n]; !ok {
				names = append(names, n)
			}
			canon[n] = append(canon[n], vs...)
		}
	}
	slices.Sort(names)
	headers := make([]string, 0, len(names))
	for _, n := range names {
		headers = append(headers, n+":"+strings.Join(canon[n], ","))
	}
	return strings.Join([]string{
		r.Method, h.Get("Content-Encoding"), h.Get("Content-Language"), cl, h.Get("Content-MD5"), h.Get("Content-Type"),
		date, h.Get("If-Modified-Since"), h.Get("If-Match"), h.Get("If-None-Match"), h.Get("If-Unmodified-Since"), h.Get("Range"),
		strings.Join(headers, "\n"), canonicalResource(r, account),
	}, "\n")
}

// canonicalResource is "/{account}{escaped path}" then each query
// parameter, sorted, as "\nname:v1,v2".
func canonicalResource(r *http.Request, account string) string {
	path, _, _ := strings.Cut(r.RequestURI, "?")
	if path == "" || !strings.HasPrefix(path, "/") {
		path = r.URL.EscapedPath()
	}
	var b strings.Builder
	b.WriteString("/" + account + path)
	q, _ := url.ParseQuery(r.URL.RawQuery)
	names := make([]string, 0, len(q))
	for k := range q {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		vs := slices.Clone(q[k])
		slices.Sort(vs)
		b.WriteString("\n" + strings.ToLower(k) + ":" + strings.Join(vs, ","))
	}
	return b.String()
}

// checkSAS verifies a service SAS (versions 2018-11-09 and later; the
// string to sign gained the encryption scope in 2020-12-06): signature,
// start, expiry, protocol, resource scope and permission.
func (s *Server) checkSAS(q url.Values, rq request, now time.Time) error {
	sv, sr, sp := q.Get("sv"), q.Get("sr"), q.Get("sp")
	if sv < "2018-11-09" {
		return fmt.Errorf("%w: SAS version %q is not supported (2018-11-09 and later)", errAuth, sv)
	}
	if q.Get("skoid") != "" || q.Get("ss") != "" {
		return fmt.Errorf("%w: only service SAS tokens signed with the account key are supported", errAuth)
	}
	canon := "/blob/" + rq.account + "/" + rq.container
	switch sr {
	case "c":
	case "b":
		canon += "/" + rq.blob
	default:
		return fmt.Errorf("%w: SAS resource %q is not b or c", errAuth, sr)
	}
	fields := []string{sp, q.Get("st"), q.Get("se"), canon, q.Get("si"), q.Get("sip"), q.Get("spr"), sv, sr, q.Get("sst")}
	if sv >= "2020-12-06" {
		fields = append(fields, q.Get("ses"))
	}
	fields = append(fields, q.Get("rscc"), q.Get("rscd"), q.Get("rsce"), q.Get("rscl"), q.Get("rsct"))
	want := s.sign(strings.Join(fields, "\n"))
	if rq.account != s.account || !hmac.Equal([]byte(q.Get("sig")), []byte(want)) {
		return fmt.Errorf("%w: the SAS signature does not match the resource", errAuth)
	}
	if q.Get("si") != "" {
		return fmt.Errorf("%w: stored access policies are not supported", errAuth)
	}
	se, err := parseSASTime(q.Get("se"))
	if err != nil {
		return fmt.Errorf("%w: SAS expiry: %w", errAuth, err)
	}
	if !now.Before(se) {
		return fmt.Errorf("%w: the SAS token expired at %s", errAuth, se.Format(time.RFC3339))
	}
	if st := q.Get("st"); st != "" {
		t, err := parseSASTime(st)
		if err != nil {
			return fmt.Errorf("%w: SAS start: %w", errAuth, err)
		}
		if now.Before(t) {
			return fmt.Errorf("%w: the SAS token is not valid before %s", errAuth, t.Format(time.RFC3339))
		}
	}
	if spr := q.Get("spr"); spr != "" && spr != "https" && spr != "https,http" {
		return fmt.Errorf("%w: SAS protocol %q", errAuth, spr)
	}
	if rq.containerOp && sr != "c" {
		return fmt.Errorf("%w: a blob SAS cannot list or change the container", errPerm)
	}
	if !strings.ContainsRune(sp, rune(rq.perm)) && (rq.alt == 0 || !strings.ContainsRune(sp, rune(rq.alt))) {
		return fmt.Errorf("%w: the SAS lacks permission %q", errPerm, string(rq.perm))
	}
	return nil
}

// parseSASTime parses a SAS time (ISO 8601 UTC, with or without seconds).
func parseSASTime(v string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04Z", "2006-01-02"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not an ISO 8601 UTC time", v)
}
