package blob

import (
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// APIVersion is the x-ms-version the endpoint answers with.
const APIVersion = "2021-12-02"

// Server serves the Blob service subset for one account over a Store.
// Create it with NewServer.
type Server struct {
	account string
	key     []byte
	store   *Store
	log     *slog.Logger
}

// NewServer returns the endpoint of account (path-style URLs
// /{account}/...), whose Shared Key is the base64 key, over st; log
// receives one line per refused request (never a signature); nil discards.
func NewServer(account, key string, st *Store, log *slog.Logger) (*Server, error) {
	k, err := base64.StdEncoding.DecodeString(key)
	if err != nil || len(k) == 0 {
		return nil, errors.New("blob: the account key is not base64")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{account: account, key: k, store: st, log: log}, nil
}

// Store is the server's store.
func (s *Server) Store() *Store { return s.store }

// Account is the account name.
func (s *Server) Account() string { return s.account }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("x-ms-version", APIVersion)
	w.Header().Set("x-ms-request-id", strconv.FormatInt(time.Now().UnixNano(), 36))
	parts := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/"), "/", 3)
	if len(parts) < 2 || parts[0] == "" || parts[1] == "" {
		s.fail(w, r, http.StatusBadRequest, "InvalidUri", "the URL must be /{account}/{container}[/{blob}]")
		return
	}
	rq := request{account: parts[0], container: parts[1]}
	if len(parts) == 3 {
		rq.blob = parts[2]
	}
	if rq.account != s.account {
		s.fail(w, r, http.StatusBadRequest, "InvalidUri", "unknown account "+rq.account)
		return
	}
	q := r.URL.Query()
	restype, comp := q.Get("restype"), q.Get("comp")
	var op func(http.ResponseWriter, *http.Request, request) error
	switch {
	case rq.blob == "" && restype == "container" && r.Method == http.MethodPut && comp == "":
		rq.perm, rq.containerOp, rq.accountOnly = PermCreate, true, true
		op = s.createContainer
	case rq.blob == "" && restype == "container" && r.Method == http.MethodGet && comp == "list":
		rq.perm, rq.containerOp = PermList, true
		op = s.listBlobs
	case rq.blob == "":
		s.fail(w, r, http.StatusBadRequest, "UnsupportedHttpVerb", fmt.Sprintf("%s on a container with restype=%q comp=%q is not supported", r.Method, restype, comp))
		return
	case r.Method == http.MethodPut && comp == "":
		rq.perm, rq.alt = PermWrite, PermCreate
		op = s.putBlob
	case r.Method == http.MethodPut && comp == "block":
		rq.perm, rq.alt = PermWrite, PermCreate
		op = s.putBlock
	case r.Method == http.MethodPut && comp == "blocklist":
		rq.perm, rq.alt = PermWrite, PermCreate
		op = s.putBlockList
	case (r.Method == http.MethodGet || r.Method == http.MethodHead) && comp == "":
		rq.perm = PermRead
		op = s.getBlob
	case r.Method == http.MethodDelete && comp == "":
		rq.perm = PermDelete
		op = s.deleteBlob
	default:
		s.fail(w, r, http.StatusBadRequest, "UnsupportedHttpVerb", fmt.Sprintf("%s with comp=%q is not supported", r.Method, comp))
		return
	}
	if err := s.authorize(r, rq); err != nil {
		code := "AuthenticationFailed"
		if errors.Is(err, errPerm) {
			code = "AuthorizationPermissionMismatch"
		}
		s.fail(w, r, http.StatusForbidden, code, err.Error())
		return
	}
	if err := op(w, r, rq); err != nil {
		s.writeError(w, r, err)
	}
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, ErrContainerNotFound):
		s.fail(w, r, http.StatusNotFound, "ContainerNotFound", "The specified container does not exist.")
	case errors.Is(err, ErrContainerExists):
		s.fail(w, r, http.StatusConflict, "ContainerAlreadyExists", "The specified container already exists.")
	case errors.Is(err, ErrBlobNotFound):
		s.fail(w, r, http.StatusNotFound, "BlobNotFound", "The specified blob does not exist.")
	case errors.Is(err, ErrInvalidBlockList):
		s.fail(w, r, http.StatusBadRequest, "InvalidBlockList", err.Error())
	case errors.Is(err, ErrTooLarge), errors.As(err, &mbe):
		s.fail(w, r, http.StatusRequestEntityTooLarge, "RequestBodyTooLarge", "The request body is too large.")
	case errors.Is(err, errBadRequest):
		s.fail(w, r, http.StatusBadRequest, "InvalidInput", err.Error())
	case errors.Is(err, errRange):
		s.fail(w, r, http.StatusRequestedRangeNotSatisfiable, "InvalidRange", err.Error())
	default:
		s.fail(w, r, http.StatusInternalServerError, "InternalError", err.Error())
	}
}

var (
	errBadRequest = errors.New("bad request")
	errRange      = errors.New("the range specified is invalid for the current size of the resource")
)

// fail writes the Blob service's XML error.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	s.log.Info("blob request refused", "method", r.Method, "path", r.URL.Path, "status", status, "code", code, "error", msg)
	w.Header().Set("x-ms-error-code", code)
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	type errBody struct {
		XMLName xml.Name `xml:"Error"`
		Code    string   `xml:"Code"`
		Message string   `xml:"Message"`
	}
	b, _ := xml.Marshal(errBody{Code: code, Message: msg})
	_, _ = io.WriteString(w, xml.Header)
	_, _ = w.Write(b)
}

func (s *Server) createContainer(w http.ResponseWriter, r *http.Request, rq request) error {
	if err := s.store.CreateContainer(rq.container); err != nil {
		return err
	}
	now := time.Now().UTC()
	w.Header().Set("ETag", fmt.Sprintf("\"0x%X\"", now.UnixNano()))
	w.Header().Set("Last-Modified", now.Format(http.TimeFormat))
	w.WriteHeader(http.StatusCreated)
	return nil
}

func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, ErrTooLarge
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		return nil, err
	}
	if r.ContentLength >= 0 && int64(len(b)) != r.ContentLength {
		return nil, fmt.Errorf("%w: body of %d bytes, Content-Length %d", errBadRequest, len(b), r.ContentLength)
	}
	return b, nil
}

// propsOf reads the blob HTTP headers of Put Blob and Put Block List.
func propsOf(r *http.Request, name string, blockList bool) (Props, error) {
	h := r.Header
	p := Props{Name: name, ContentType: h.Get("x-ms-blob-content-type"), ContentEncoding: h.Get("x-ms-blob-content-encoding")}
	md5h := h.Get("x-ms-blob-content-md5")
	if !blockList {
		if p.ContentType == "" {
			p.ContentType = h.Get("Content-Type")
		}
		if p.ContentEncoding == "" {
			p.ContentEncoding = h.Get("Content-Encoding")
		}
	}
	if p.ContentType == "" {
		p.ContentType = "application/octet-stream"
	}
	if md5h != "" {
		b, err := base64.StdEncoding.DecodeString(md5h)
		if err != nil {
			return Props{}, fmt.Errorf("%w: x-ms-blob-content-md5 is not base64", errBadRequest)
		}
		p.ContentMD5 = b
	}
	for k, vs := range h {
		if n, ok := strings.CutPrefix(strings.ToLower(k), "x-ms-meta-"); ok && len(vs) > 0 {
			if p.Metadata == nil {
				p.Metadata = map[string]string{}
			}
			p.Metadata[n] = vs[0]
		}
	}
	return p, nil
}

func writeProps(w http.ResponseWriter, p Props) {
	w.Header().Set("ETag", p.ETag)
	w.Header().Set("Last-Modified", p.Modified.Format(http.TimeFormat))
	w.Header().Set("x-ms-request-server-encrypted", "false")
}

func (s *Server) putBlob(w http.ResponseWriter, r *http.Request, rq request) error {
	if bt := r.Header.Get("x-ms-blob-type"); bt != "BlockBlob" {
		return fmt.Errorf("%w: x-ms-blob-type %q: only BlockBlob is supported", errBadRequest, bt)
	}
	p, err := propsOf(r, rq.blob, false)
	if err != nil {
		return err
	}
	if _, err := s.store.Properties(rq.container, ""); errors.Is(err, ErrContainerNotFound) {
		return err
	}
	data, err := readBody(w, r, MaxPutBlob)
	if err != nil {
		return err
	}
	if md := r.Header.Get("Content-MD5"); md != "" {
		if err := checkMD5(md, data); err != nil {
			return err
		}
	}
	p, err = s.store.Put(rq.container, p, data)
	if err != nil {
		return err
	}
	writeProps(w, p)
	w.Header().Set("Content-MD5", base64.StdEncoding.EncodeToString(p.ContentMD5))
	w.WriteHeader(http.StatusCreated)
	return nil
}

func (s *Server) putBlock(w http.ResponseWriter, r *http.Request, rq request) error {
	id := r.URL.Query().Get("blockid")
	if raw, err := base64.StdEncoding.DecodeString(id); err != nil || len(raw) == 0 || len(raw) > 64 {
		return fmt.Errorf("%w: blockid must be base64 of at most 64 bytes", errBadRequest)
	}
	data, err := readBody(w, r, MaxBlockSize)
	if err != nil {
		return err
	}
	if md := r.Header.Get("Content-MD5"); md != "" {
		if err := checkMD5(md, data); err != nil {
			return err
		}
	}
	if err := s.store.StageBlock(rq.container, rq.blob, id, data); err != nil {
		return err
	}
	w.WriteHeader(http.StatusCreated)
	return nil
}

// blockListXML is the body of Put Block List.
type blockListXML struct {
	XMLName xml.Name
	Items   []struct {
		XMLName xml.Name
		ID      string `xml:",chardata"`
	} `xml:",any"`
}

func (s *Server) putBlockList(w http.ResponseWriter, r *http.Request, rq request) error {
	body, err := readBody(w, r, 8<<20)
	if err != nil {
		return err
	}
	var bl blockListXML
	if err := xml.Unmarshal(body, &bl); err != nil || bl.XMLName.Local != "BlockList" {
		return fmt.Errorf("%w: the body is not a BlockList", ErrInvalidBlockList)
	}
	refs := make([]BlockRef, 0, len(bl.Items))
	for _, it := range bl.Items {
		switch it.XMLName.Local {
		case "Latest", "Uncommitted", "Committed":
		default:
			return fmt.Errorf("%w: element %q", ErrInvalidBlockList, it.XMLName.Local)
		}
		refs = append(refs, BlockRef{ID: strings.TrimSpace(it.ID), Kind: it.XMLName.Local})
	}
	p, err := propsOf(r, rq.blob, true)
	if err != nil {
		return err
	}
	p, err = s.store.CommitBlocks(rq.container, p, refs)
	if err != nil {
		return err
	}
	writeProps(w, p)
	w.WriteHeader(http.StatusCreated)
	return nil
}

func checkMD5(h string, data []byte) error {
	want, err := base64.StdEncoding.DecodeString(h)
	if err != nil {
		return fmt.Errorf("%w: Content-MD5 is not base64", errBadRequest)
	}
	got := md5Of(data)
	if string(want) != string(got) {
		return fmt.Errorf("%w: Content-MD5 does not match the body (Md5Mismatch)", errBadRequest)
	}
	return nil
}

// parseRange parses "bytes=a-b" or "bytes=a-" against size; ok false
// without a range.
func parseRange(v string, size int64) (start, end int64, ok bool, err error) {
	if v == "" {
		return 0, 0, false, nil
	}
	spec, found := strings.CutPrefix(v, "bytes=")
	a, b, dash := strings.Cut(spec, "-")
	if !found || !dash || strings.Contains(spec, ",") {
		return 0, 0, false, fmt.Errorf("%w: range %q", errBadRequest, v)
	}
	start, err1 := strconv.ParseInt(a, 10, 64)
	if err1 != nil || start < 0 {
		return 0, 0, false, fmt.Errorf("%w: range %q", errBadRequest, v)
	}
	end = size - 1
	if b != "" {
		e, err2 := strconv.ParseInt(b, 10, 64)
		if err2 != nil || e < start {
			return 0, 0, false, fmt.Errorf("%w: range %q", errBadRequest, v)
		}
		end = min(e, size-1)
	}
	if start >= size {
		return 0, 0, false, errRange
	}
	return start, end, true, nil
}

func (s *Server) getBlob(w http.ResponseWriter, r *http.Request, rq request) error {
	p, rd, err := s.store.Open(rq.container, rq.blob)
	if err != nil {
		return err
	}
	defer rd.Close()
	rng := r.Header.Get("x-ms-range")
	if rng == "" {
		rng = r.Header.Get("Range")
	}
	start, end, ranged, err := parseRange(rng, p.Size)
	if err != nil {
		return err
	}
	h := w.Header()
	writeProps(w, p)
	h.Set("Content-Type", p.ContentType)
	if p.ContentEncoding != "" {
		h.Set("Content-Encoding", p.ContentEncoding)
	}
	h.Set("x-ms-blob-type", "BlockBlob")
	h.Set("Accept-Ranges", "bytes")
	h.Set("x-ms-creation-time", p.Created.Format(http.TimeFormat))
	for k, v := range p.Metadata {
		h.Set("x-ms-meta-"+k, v)
	}
	status, n := http.StatusOK, p.Size
	if ranged {
		status, n = http.StatusPartialContent, end-start+1
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, p.Size))
		if len(p.ContentMD5) > 0 {
			h.Set("x-ms-blob-content-md5", base64.StdEncoding.EncodeToString(p.ContentMD5))
		}
	} else if len(p.ContentMD5) > 0 {
		h.Set("Content-MD5", base64.StdEncoding.EncodeToString(p.ContentMD5))
	}
	h.Set("Content-Length", strconv.FormatInt(n, 10))
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return nil
	}
	if _, err := rd.Seek(start, io.SeekStart); err != nil {
		return nil // the status is written
	}
	_, _ = io.CopyN(w, rd, n)
	return nil
}

func (s *Server) deleteBlob(w http.ResponseWriter, r *http.Request, rq request) error {
	if err := s.store.Delete(rq.container, rq.blob); err != nil {
		return err
	}
	w.Header().Set("x-ms-delete-type-permanent", "true")
	w.WriteHeader(http.StatusAccepted)
	return nil
}

type listXML struct {
	XMLName         xml.Name  `xml:"EnumerationResults"`
	ServiceEndpoint string    `xml:"ServiceEndpoint,attr"`
	ContainerName   string    `xml:"ContainerName,attr"`
	Prefix          string    `xml:"Prefix"`
	Blobs           []blobXML `xml:"Blobs>Blob"`
	NextMarker      string    `xml:"NextMarker"`
}

type blobXML struct {
	Name       string `xml:"Name"`
	Properties struct {
		CreationTime    string `xml:"Creation-Time"`
		LastModified    string `xml:"Last-Modified"`
		Etag            string `xml:"Etag"`
		ContentLength   int64  `xml:"Content-Length"`
		ContentType     string `xml:"Content-Type"`
		ContentEncoding string `xml:"Content-Encoding,omitempty"`
		ContentMD5      string `xml:"Content-MD5,omitempty"`
		BlobType        string `xml:"BlobType"`
		AccessTier      string `xml:"AccessTier"`
		LeaseStatus     string `xml:"LeaseStatus"`
		LeaseState      string `xml:"LeaseState"`
		ServerEncrypted bool   `xml:"ServerEncrypted"`
	} `xml:"Properties"`
}

func (s *Server) listBlobs(w http.ResponseWriter, r *http.Request, rq request) error {
	prefix := r.URL.Query().Get("prefix")
	ps, err := s.store.List(rq.container, prefix)
	if err != nil {
		return err
	}
	out := listXML{ServiceEndpoint: "https://" + r.Host + "/" + s.account + "/", ContainerName: rq.container, Prefix: prefix}
	for _, p := range ps {
		var b blobXML
		b.Name = p.Name
		b.Properties.CreationTime = p.Created.Format(http.TimeFormat)
		b.Properties.LastModified = p.Modified.Format(http.TimeFormat)
		b.Properties.Etag = p.ETag
		b.Properties.ContentLength = p.Size
		b.Properties.ContentType = p.ContentType
		b.Properties.ContentEncoding = p.ContentEncoding
		if len(p.ContentMD5) > 0 {
			b.Properties.ContentMD5 = base64.StdEncoding.EncodeToString(p.ContentMD5)
		}
		b.Properties.BlobType, b.Properties.AccessTier = "BlockBlob", "Hot"
		b.Properties.LeaseStatus, b.Properties.LeaseState = "unlocked", "available"
		out.Blobs = append(out.Blobs, b)
	}
	body, err := xml.Marshal(out)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, xml.Header)
	_, _ = w.Write(body)
	return nil
}
