package blob

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
)

const testKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

type fixture struct {
	srv  *httptest.Server
	url  string // https://127.0.0.1:port/acct
	cred *azblob.SharedKeyCredential
	opts *azblob.ClientOptions
}

func start(t *testing.T, dir string) *fixture {
	t.Helper()
	st, err := NewStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer("acct", testKey, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(s)
	t.Cleanup(srv.Close)
	cred, err := azblob.NewSharedKeyCredential("acct", testKey)
	if err != nil {
		t.Fatal(err)
	}
	opts := &azblob.ClientOptions{ClientOptions: azcore.ClientOptions{
		Transport: srv.Client(),
		Retry:     policy.RetryOptions{MaxRetries: -1},
	}}
	return &fixture{srv: srv, url: srv.URL + "/acct", cred: cred, opts: opts}
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAzblobRoundTrip drives the endpoint with the official azblob client:
// Shared Key create container, a blocked upload (Put Block + Put Block
// List), a small Put Blob, ranged and parallel reads, properties, list and
// delete.
func TestAzblobRoundTrip(t *testing.T) {
	for _, dir := range []string{"", t.TempDir()} {
		t.Run("dir="+map[bool]string{true: "memory", false: "disk"}[dir == ""], func(t *testing.T) {
			f := start(t, dir)
			ctx := context.Background()
			c, err := azblob.NewClientWithSharedKeyCredential(f.url, f.cred, f.opts)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.CreateContainer(ctx, "files", nil); err != nil {
				t.Fatalf("create container: %v", err)
			}
			if _, err := c.CreateContainer(ctx, "files", nil); !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
				t.Fatalf("second create: %v, want ContainerAlreadyExists", err)
			}
			big := randomBytes(t, 5<<20+123)
			if _, err := c.UploadBuffer(ctx, "files", "dev/big.bin", big, &azblob.UploadBufferOptions{BlockSize: 1 << 20, Concurrency: 3}); err != nil {
				t.Fatalf("upload: %v", err)
			}
			small := []byte("hello blob")
			if _, err := c.UploadBuffer(ctx, "files", "dev/small.txt", small, &azblob.UploadBufferOptions{HTTPHeaders: &blob.HTTPHeaders{BlobContentType: to.Ptr("text/plain")}}); err != nil {
				t.Fatalf("small upload: %v", err)
			}
			got := make([]byte, len(big))
			if _, err := c.DownloadBuffer(ctx, "files", "dev/big.bin", got, &azblob.DownloadBufferOptions{BlockSize: 700 << 10, Concurrency: 4}); err != nil {
				t.Fatalf("download: %v", err)
			}
			if !bytes.Equal(got, big) {
				t.Fatal("downloaded bytes differ")
			}
			bc := c.ServiceClient().NewContainerClient("files").NewBlobClient("dev/small.txt")
			props, err := bc.GetProperties(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if *props.ContentLength != int64(len(small)) || *props.ContentType != "text/plain" {
				t.Fatalf("properties: length %d type %q", *props.ContentLength, *props.ContentType)
			}
			resp, err := bc.DownloadStream(ctx, &blob.DownloadStreamOptions{Range: blob.HTTPRange{Offset: 6, Count: 4}})
			if err != nil {
				t.Fatal(err)
			}
			var part bytes.Buffer
			_, _ = part.ReadFrom(resp.Body)
			resp.Body.Close()
			if part.String() != "blob" {
				t.Fatalf("range read %q, want blob", part.String())
			}
			var names []string
			pager := c.NewListBlobsFlatPager("files", &azblob.ListBlobsFlatOptions{Prefix: to.Ptr("dev/")})
			for pager.More() {
				page, err := pager.NextPage(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for _, b := range page.Segment.BlobItems {
					names = append(names, *b.Name)
					if *b.Name == "dev/big.bin" && *b.Properties.ContentLength != int64(len(big)) {
						t.Errorf("listed size %d", *b.Properties.ContentLength)
					}
				}
			}
			if strings.Join(names, ",") != "dev/big.bin,dev/small.txt" {
				t.Fatalf("listed %v", names)
			}
			if _, err := c.DeleteBlob(ctx, "files", "dev/small.txt", nil); err != nil {
				t.Fatal(err)
			}
			if _, err := bc.GetProperties(ctx, nil); !bloberror.HasCode(err, bloberror.BlobNotFound) {
				t.Fatalf("after delete: %v, want BlobNotFound", err)
			}
			if dir != "" { // a new store over the same directory still has the blob
				st, err := NewStore(dir)
				if err != nil {
					t.Fatal(err)
				}
				p, rd, err := st.Open("files", "dev/big.bin")
				if err != nil {
					t.Fatal(err)
				}
				var b bytes.Buffer
				_, _ = b.ReadFrom(rd)
				rd.Close()
				if p.Size != int64(len(big)) || !bytes.Equal(b.Bytes(), big) {
					t.Fatal("reloaded blob differs")
				}
			}
		})
	}
}

func sasURL(t *testing.T, f *fixture, perms string, expiry time.Time, key *azblob.SharedKeyCredential) string {
	t.Helper()
	p, err := sas.BlobSignatureValues{
		Protocol: sas.ProtocolHTTPS, ExpiryTime: expiry, Permissions: perms,
		ContainerName: "files", BlobName: "dev/x.bin",
	}.SignWithSharedKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return f.url + "/files/dev/x.bin?" + p.Encode()
}

// TestSAS checks service SAS tokens made by azblob's sas package:
// accepted with the permission, refused when expired, signed with another
// key, lacking the permission, or used on another blob.
func TestSAS(t *testing.T) {
	f := start(t, "")
	ctx := context.Background()
	c, _ := azblob.NewClientWithSharedKeyCredential(f.url, f.cred, f.opts)
	if _, err := c.CreateContainer(ctx, "files", nil); err != nil {
		t.Fatal(err)
	}
	data := randomBytes(t, 300<<10)
	upload := func(u string) error {
		bb, err := blockblob.NewClientWithNoCredential(u, &blockblob.ClientOptions{ClientOptions: f.opts.ClientOptions})
		if err != nil {
			return err
		}
		_, err = bb.UploadBuffer(ctx, data, &blockblob.UploadBufferOptions{BlockSize: 100 << 10})
		return err
	}
	if err := upload(sasURL(t, f, "cw", time.Now().Add(time.Hour), f.cred)); err != nil {
		t.Fatalf("valid SAS refused: %v", err)
	}
	other, _ := azblob.NewSharedKeyCredential("acct", "b3RoZXIga2V5IG90aGVyIGtleSBvdGhlciBrZXk=")
	for name, tc := range map[string]struct {
		u    string
		code bloberror.Code
	}{
		"expired":        {sasURL(t, f, "cw", time.Now().Add(-time.Minute), f.cred), bloberror.AuthenticationFailed},
		"wrong key":      {sasURL(t, f, "cw", time.Now().Add(time.Hour), other), bloberror.AuthenticationFailed},
		"read only":      {sasURL(t, f, "r", time.Now().Add(time.Hour), f.cred), bloberror.AuthorizationPermissionMismatch},
		"other blob":     {strings.Replace(sasURL(t, f, "cw", time.Now().Add(time.Hour), f.cred), "x.bin?", "y.bin?", 1), bloberror.AuthenticationFailed},
		"no credentials": {f.url + "/files/dev/x.bin", bloberror.AuthenticationFailed},
	} {
		err := upload(tc.u)
		var re *azcore.ResponseError
		if !errors.As(err, &re) || re.StatusCode != http.StatusForbidden || !bloberror.HasCode(err, tc.code) {
			t.Errorf("%s: %v, want 403 %s", name, err, tc.code)
		}
	}
	// The read-only SAS reads what the write SAS wrote.
	bb, _ := blockblob.NewClientWithNoCredential(sasURL(t, f, "r", time.Now().Add(time.Hour), f.cred), &blockblob.ClientOptions{ClientOptions: f.opts.ClientOptions})
	got := make([]byte, len(data))
	if _, err := bb.DownloadBuffer(ctx, got, nil); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back through a read SAS: %v", err)
	}
}
