package fileupload

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"

	"github.com/iotc-go/iotc/emulator/internal/blob"
)

// Storage is where devices upload: it makes the container, signs a blob
// SAS token for a device and reads a finished blob's properties.
type Storage interface {
	// EnsureContainer creates the container when it is missing.
	EnsureContainer(ctx context.Context, container string) error
	// HostName is the host name devices put in the blob URL
	// (https://{hostName}/{container}/{blob}): host[:port], then /{account}
	// for a path-style account.
	HostName() string
	// Sign returns a SAS token ("?sv=...") granting read, create and write
	// on the blob until expiry.
	Sign(container, blobName string, expiry time.Time) (string, error)
	// Properties returns a blob's size and last modification.
	Properties(ctx context.Context, container, blobName string) (int64, time.Time, error)
}

// signer signs service SAS tokens for an account.
type signer struct {
	cred     *azblob.SharedKeyCredential
	hostName string
}

func (s signer) HostName() string { return s.hostName }

func (s signer) Sign(container, blobName string, expiry time.Time) (string, error) {
	p, err := sas.BlobSignatureValues{
		Protocol:      sas.ProtocolHTTPSandHTTP,
		StartTime:     time.Now().UTC().Add(-5 * time.Minute), // clock skew, as IoT Hub allows
		ExpiryTime:    expiry.UTC(),
		Permissions:   (&sas.BlobPermissions{Read: true, Create: true, Write: true}).String(),
		ContainerName: container,
		BlobName:      blobName,
	}.SignWithSharedKey(s.cred)
	if err != nil {
		return "", fmt.Errorf("fileupload: sign SAS: %w", err)
	}
	return "?" + p.Encode(), nil
}

// Embedded is the emulator's own blob endpoint as upload storage.
type Embedded struct {
	signer
	srv *blob.Server
}

// NewEmbedded returns the storage of srv, whose URLs start with
// https://{hostPort}/{account}.
func NewEmbedded(srv *blob.Server, key, hostPort string) (*Embedded, error) {
	cred, err := azblob.NewSharedKeyCredential(srv.Account(), key)
	if err != nil {
		return nil, fmt.Errorf("fileupload: %w", err)
	}
	return &Embedded{signer: signer{cred: cred, hostName: hostPort + "/" + srv.Account()}, srv: srv}, nil
}

// EnsureContainer implements Storage.
func (e *Embedded) EnsureContainer(_ context.Context, container string) error {
	return e.srv.Store().EnsureContainer(container)
}

// Properties implements Storage.
func (e *Embedded) Properties(_ context.Context, container, blobName string) (int64, time.Time, error) {
	p, err := e.srv.Store().Properties(container, blobName)
	if err != nil {
		return 0, time.Time{}, err
	}
	return p.Size, p.Modified, nil
}

// External is a storage account named by a connection string (Azurite or
// Azure Storage).
type External struct {
	signer
	client *azblob.Client
}

// ErrConnectionString reports a storage connection string the emulator
// cannot use; its text never holds the key.
var ErrConnectionString = errors.New("fileupload: storage connection string")

// NewExternal returns the storage of a connection string with AccountName,
// AccountKey and BlobEndpoint (or DefaultEndpointsProtocol and
// EndpointSuffix). tlsConf, when not nil, is the TLS configuration of the
// emulator's requests to it (a private CA for Azurite over HTTPS).
func NewExternal(cs string, tlsConf *tls.Config) (*External, error) {
	fields := map[string]string{}
	for _, part := range strings.Split(cs, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if ok {
			fields[strings.ToLower(k)] = v
		}
	}
	account, key := fields["accountname"], fields["accountkey"]
	if account == "" || key == "" {
		return nil, fmt.Errorf("%w: AccountName and AccountKey are required", ErrConnectionString)
	}
	endpoint := fields["blobendpoint"]
	if endpoint == "" {
		proto, suffix := fields["defaultendpointsprotocol"], fields["endpointsuffix"]
		if proto == "" {
			proto = "https"
		}
		if suffix == "" {
			suffix = "core.windows.net"
		}
		endpoint = proto + "://" + account + ".blob." + suffix
	}
	u, err := url.Parse(strings.TrimSuffix(endpoint, "/"))
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("%w: BlobEndpoint is not a URL", ErrConnectionString)
	}
	cred, err := azblob.NewSharedKeyCredential(account, key)
	if err != nil {
		return nil, fmt.Errorf("%w: AccountKey is not base64", ErrConnectionString)
	}
	opts := &azblob.ClientOptions{}
	if tlsConf != nil {
		opts.ClientOptions = azcore.ClientOptions{Transport: &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf}}}
	}
	opts.Retry = policy.RetryOptions{MaxRetries: 2}
	client, err := azblob.NewClientWithSharedKeyCredential(u.String(), cred, opts)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConnectionString, err)
	}
	return &External{signer: signer{cred: cred, hostName: u.Host + u.Path}, client: client}, nil
}

// EnsureContainer implements Storage.
func (x *External) EnsureContainer(ctx context.Context, container string) error {
	_, err := x.client.CreateContainer(ctx, container, nil)
	if err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		return fmt.Errorf("fileupload: create container %s: %w", container, err)
	}
	return nil
}

// Properties implements Storage.
func (x *External) Properties(ctx context.Context, container, blobName string) (int64, time.Time, error) {
	p, err := x.client.ServiceClient().NewContainerClient(container).NewBlobClient(blobName).GetProperties(ctx, nil)
	if err != nil {
		return 0, time.Time{}, err
	}
	var size int64
	var mod time.Time
	if p.ContentLength != nil {
		size = *p.ContentLength
	}
	if p.LastModified != nil {
		mod = *p.LastModified
	}
	return size, mod, nil
}
