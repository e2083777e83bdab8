package core

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// This file holds IoT Hub's file upload use cases: a device asks for a
// blob SAS URI (at most MaxActiveFileUploads at a time), uploads to the
// storage the hub names, and notifies the hub; the service receives one
// file upload notification per successful upload. The storage itself is a
// front-end's business (a blob endpoint or an external account): the core
// keeps the upload records, the configuration and the notifications.

// MaxActiveFileUploads is IoT Hub's limit of concurrent file uploads per
// device: an upload is active from its SAS URI until its notification or
// the expiry of its SAS token.
const MaxActiveFileUploads = 10

// MaxFileUploadHistory is how many ended uploads are kept per device (the
// dashboard lists them); the oldest are dropped beyond it.
const MaxFileUploadHistory = 50

// DefaultFileUploadSASTTL is the SAS token lifetime IoT Hub gives by
// default (one hour).
const DefaultFileUploadSASTTL = time.Hour

// ErrTooManyUploads reports a device at MaxActiveFileUploads (IoT Hub's
// 403006 DeviceMaximumActiveFileUploadLimitExceeded).
var ErrTooManyUploads = errors.New("emulator: the device has the maximum number of active file uploads")

// metaFileUploads is the KindMeta key of the file upload state.
const metaFileUploads = "fileUploads"

// FileUploadConfig is the file upload configuration of the application
// (IoT Central's fileUploads resource).
type FileUploadConfig struct {
	// ConnectionString is the storage account connection string ("" means
	// the emulator's own blob endpoint). It is a secret: never logged.
	ConnectionString string `json:"connectionString"`
	// Container is the blob container uploads go to. Default "fileuploads".
	Container string `json:"container"`
	// SASTTL is the SAS token lifetime. Default DefaultFileUploadSASTTL.
	SASTTL time.Duration `json:"sasTtl"`
	// Disabled turns file uploads off: the hub refuses new uploads.
	Disabled bool `json:"disabled"`
	// ETag changes with every change of the configuration.
	ETag string `json:"etag"`
	// Set is true once the operator configured uploads (IoT Central's
	// GET /fileUploads answers 404 before).
	Set bool `json:"set"`
}

// FileUpload is one upload a device started.
type FileUpload struct {
	// CorrelationID identifies the upload between the SAS request and the
	// notification.
	CorrelationID string `json:"correlationId"`
	// DeviceID is the uploading device.
	DeviceID string `json:"deviceId"`
	// BlobName is the blob's name in the container ("{device}/{name}").
	BlobName string `json:"blobName"`
	// Container is the blob container.
	Container string `json:"container"`
	// HostName is the storage host (and path, for path-style accounts).
	HostName string `json:"hostName"`
	// Started is when the SAS URI was issued; Expiry when its token expires.
	Started time.Time `json:"started"`
	Expiry  time.Time `json:"expiry"`
	// Ended is set once the device notified.
	Ended time.Time `json:"ended,omitzero"`
	// Success, StatusCode and Description are the device's notification.
	Success     bool   `json:"success"`
	StatusCode  int    `json:"statusCode"`
	Description string `json:"description,omitempty"`
	// Size is the blob's size when the upload succeeded.
	Size int64 `json:"size"`
}

// BlobURI is https://{HostName}/{Container}/{BlobName}.
func (u FileUpload) BlobURI() string {
	return "https://" + u.HostName + "/" + u.Container + "/" + u.BlobName
}

// FileNotification is IoT Hub's file upload notification.
type FileNotification struct {
	// DeviceID is the device that uploaded.
	DeviceID string `json:"deviceId"`
	// BlobURI is the blob's URI (without SAS).
	BlobURI string `json:"blobUri"`
	// BlobName is the blob's name in the container.
	BlobName string `json:"blobName"`
	// LastUpdatedTime is the blob's last modification.
	LastUpdatedTime time.Time `json:"lastUpdatedTime"`
	// BlobSizeInBytes is the blob's size.
	BlobSizeInBytes int64 `json:"blobSizeInBytes"`
	// EnqueuedTimeUTC is when the hub made the notification.
	EnqueuedTimeUTC time.Time `json:"enqueuedTimeUtc"`
}

type fileNoteEntry struct {
	Seq      int64            `json:"seq"`
	Note     FileNotification `json:"note"`
	inflight bool
}

type fileUploadState struct {
	Config  FileUploadConfig              `json:"config"`
	Uploads map[string][]*FileUploadState `json:"uploads"` // by device, oldest first
	Notes   []fileNoteEntry               `json:"notes"`
	Seq     int64                         `json:"seq"`
	wake    chan struct{}
}

// FileUploadState is FileUpload as stored.
type FileUploadState = FileUpload

func (s *fileUploadState) init() {
	if s.wake == nil {
		s.wake = make(chan struct{}, 1)
	}
	if s.Uploads == nil {
		s.Uploads = map[string][]*FileUploadState{}
	}
}

func (c *Core) fileUploadChangeLocked() Change {
	return Change{Op: OpPut, Record: Record{Kind: KindMeta, Key: metaFileUploads, Doc: mustJSON(&c.uploads)}}
}

// restoreFileUploads loads the stored file upload state (Load).
func (c *Core) restoreFileUploads(doc []byte) error {
	var s fileUploadState
	if err := json.Unmarshal(doc, &s); err != nil {
		return err
	}
	s.wake = c.uploads.wake
	s.init()
	c.uploads = s
	return nil
}

// FileUploadSettings returns the file upload configuration with its
// defaults applied.
func (c *Core) FileUploadSettings() FileUploadConfig {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.uploads.init()
	return withUploadDefaults(c.uploads.Config)
}

func withUploadDefaults(cfg FileUploadConfig) FileUploadConfig {
	if cfg.Container == "" {
		cfg.Container = "fileuploads"
	}
	if cfg.SASTTL <= 0 {
		cfg.SASTTL = DefaultFileUploadSASTTL
	}
	return cfg
}

// ValidContainerName checks Azure's container naming rules: 3 to 63
// lowercase letters, digits and single hyphens, starting and ending with a
// letter or digit. It returns an error wrapping ErrInvalid.
func ValidContainerName(name string) error {
	ok := len(name) >= 3 && len(name) <= 63 && !strings.Contains(name, "--") &&
		name[0] != '-' && name[len(name)-1] != '-'
	for _, r := range name {
		ok = ok && (r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-')
	}
	if !ok {
		return fmt.Errorf("%w: container name %q (3-63 lowercase letters, digits and single hyphens)", ErrInvalid, name)
	}
	return nil
}

// SetFileUploadSettings replaces the file upload configuration (a zero
// Container or SASTTL takes its default) and returns it with a new etag.
// ifMatch, when not "" or "*", must be the current etag
// (ErrPreconditionFailed). It returns ErrInvalid for a bad container name
// or a TTL over 48 hours (IoT Hub's maximum), and the store's error.
func (c *Core) SetFileUploadSettings(ctx context.Context, cfg FileUploadConfig, ifMatch string) (FileUploadConfig, error) {
	cfg = withUploadDefaults(cfg)
	if err := ValidContainerName(cfg.Container); err != nil {
		return FileUploadConfig{}, err
	}
	if cfg.SASTTL > 48*time.Hour {
		return FileUploadConfig{}, fmt.Errorf("%w: sasTtl %s is over 48 hours", ErrInvalid, cfg.SASTTL)
	}
	c.mu.Lock()
	c.uploads.init()
	if ifMatch != "" && ifMatch != "*" && ifMatch != c.uploads.Config.ETag {
		c.mu.Unlock()
		return FileUploadConfig{}, fmt.Errorf("%w: fileUploads etag", ErrPreconditionFailed)
	}
	cfg.Set = true
	cfg.ETag = `"` + RandomHex(8) + `"`
	c.uploads.Config = cfg
	staged := c.stageLocked(c.fileUploadChangeLocked())
	c.mu.Unlock()
	if err := await(ctx, staged); err != nil {
		return FileUploadConfig{}, err
	}
	return cfg, nil
}

// ResetFileUploadSettings removes the configuration (IoT Central's DELETE
// /fileUploads): the defaults apply again. It returns the store's error.
func (c *Core) ResetFileUploadSettings(ctx context.Context) error {
	c.mu.Lock()
	c.uploads.init()
	c.uploads.Config = FileUploadConfig{}
	staged := c.stageLocked(c.fileUploadChangeLocked())
	c.mu.Unlock()
	return await(ctx, staged)
}

// BeginFileUpload records a new upload of blobName by device id to
// hostName/container with a SAS token that expires at expiry, and returns
// it. It returns ErrNotFound (unknown device), ErrInvalid (an empty or too
// long blob name, uploads disabled), ErrTooManyUploads (IoT Hub's limit
// of MaxActiveFileUploads) and the store's error.
func (c *Core) BeginFileUpload(ctx context.Context, id, blobName, hostName, container string, expiry time.Time) (FileUpload, error) {
	if blobName == "" || len(blobName) > 1024-len(id)-1 {
		return FileUpload{}, fmt.Errorf("%w: blob name must have 1 to %d characters", ErrInvalid, 1024-len(id)-1)
	}
	c.mu.Lock()
	c.uploads.init()
	if _, err := c.lookup(id); err != nil {
		c.mu.Unlock()
		return FileUpload{}, err
	}
	if c.uploads.Config.Disabled {
		c.mu.Unlock()
		return FileUpload{}, fmt.Errorf("%w: file uploads are disabled", ErrInvalid)
	}
	now := c.now()
	active := 0
	for _, u := range c.uploads.Uploads[id] {
		if u.Ended.IsZero() && now.Before(u.Expiry) {
			active++
		}
	}
	if active >= MaxActiveFileUploads {
		c.mu.Unlock()
		return FileUpload{}, fmt.Errorf("%w: device %q has %d active uploads (limit %d)", ErrTooManyUploads, id, active, MaxActiveFileUploads)
	}
	u := &FileUploadState{
		CorrelationID: RandomHex(24), DeviceID: id, BlobName: id + "/" + blobName,
		Container: container, HostName: hostName, Started: now, Expiry: expiry,
	}
	list := append(c.uploads.Uploads[id], u)
	c.uploads.Uploads[id] = trimUploads(list, now)
	out := *u
	staged := c.stageLocked(c.fileUploadChangeLocked())
	c.mu.Unlock()
	if err := await(ctx, staged); err != nil {
		return FileUpload{}, err
	}
	c.log.Info("file upload started", "device_id", id, "blob", out.BlobName, "correlation_id", out.CorrelationID)
	return out, nil
}

// trimUploads drops the oldest ended or expired uploads beyond
// MaxFileUploadHistory (active ones stay).
func trimUploads(list []*FileUploadState, now time.Time) []*FileUploadState {
	for extra := len(list) - MaxFileUploadHistory; extra > 0; extra-- {
		i := slices.IndexFunc(list, func(u *FileUploadState) bool { return !u.Ended.IsZero() || !now.Before(u.Expiry) })
		if i < 0 {
			break
		}
		list = slices.Delete(list, i, i+1)
	}
	return list
}

// FileUploadResult is a device's notification of an upload's end.
type FileUploadResult struct {
	// Success is the device's isSuccess.
	Success bool
	// StatusCode and Description are the device's statusCode and
	// statusDescription.
	StatusCode  int
	Description string
	// Size and LastModified describe the blob (a successful upload); the
	// front-end reads them from the storage.
	Size         int64
	LastModified time.Time
}

// EndFileUpload ends device id's upload correlationID with r; a
// successful upload queues a file upload notification for the service.
// It returns ErrNotFound (unknown device or correlation id, or an upload
// that already ended) and the store's error.
func (c *Core) EndFileUpload(ctx context.Context, id, correlationID string, r FileUploadResult) (FileUpload, error) {
	c.mu.Lock()
	c.uploads.init()
	var u *FileUploadState
	for _, x := range c.uploads.Uploads[id] {
		if x.CorrelationID == correlationID {
			u = x
		}
	}
	if u == nil || !u.Ended.IsZero() {
		c.mu.Unlock()
		return FileUpload{}, fmt.Errorf("%w: no active file upload with this correlation id for device %q", ErrNotFound, id)
	}
	now := c.now()
	u.Ended, u.Success, u.StatusCode, u.Description = now, r.Success, r.StatusCode, r.Description
	if r.Success {
		u.Size = r.Size
		lm := r.LastModified
		if lm.IsZero() {
			lm = now
		}
		c.uploads.Seq++
		c.uploads.Notes = append(c.uploads.Notes, fileNoteEntry{Seq: c.uploads.Seq, Note: FileNotification{
			DeviceID: id, BlobURI: u.BlobURI(), BlobName: u.BlobName, LastUpdatedTime: lm.UTC(),
			BlobSizeInBytes: r.Size, EnqueuedTimeUTC: now,
		}})
		if n := len(c.uploads.Notes) - MaxFeedback; n > 0 {
			c.uploads.Notes = slices.Delete(c.uploads.Notes, 0, n)
		}
		select {
		case c.uploads.wake <- struct{}{}:
		default:
		}
	}
	out := *u
	staged := c.stageLocked(c.fileUploadChangeLocked())
	c.mu.Unlock()
	if err := await(ctx, staged); err != nil {
		return FileUpload{}, err
	}
	c.log.Info("file upload ended", "device_id", id, "blob", out.BlobName, "success", r.Success, "status", r.StatusCode)
	return out, nil
}

// FileUploads lists device id's uploads, oldest first (at most
// MaxFileUploadHistory ended ones), or nil for an unknown device.
func (c *Core) FileUploads(id string) []FileUpload {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []FileUpload
	for _, u := range c.uploads.Uploads[id] {
		out = append(out, *u)
	}
	return out
}

// FileNotificationReady receives a value when file upload notifications
// may be waiting.
func (c *Core) FileNotificationReady() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.uploads.init()
	return c.uploads.wake
}

// TakeFileNotification hands out the oldest waiting file upload
// notification, marked in flight until SettleFileNotification; false when
// none waits.
func (c *Core) TakeFileNotification() (FileNotification, int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.uploads.Notes {
		e := &c.uploads.Notes[i]
		if !e.inflight {
			e.inflight = true
			return e.Note, e.Seq, true
		}
	}
	return FileNotification{}, 0, false
}

// SettleFileNotification ends a TakeFileNotification: done removes it
// (the service completed it), else it waits again. It returns the store's
// error.
func (c *Core) SettleFileNotification(seq int64, done bool) error {
	c.mu.Lock()
	var staged <-chan error
	i := slices.IndexFunc(c.uploads.Notes, func(e fileNoteEntry) bool { return e.Seq == seq })
	switch {
	case i < 0:
	case done:
		c.uploads.Notes = slices.Delete(c.uploads.Notes, i, i+1)
		staged = c.stageLocked(c.fileUploadChangeLocked())
	default:
		c.uploads.Notes[i].inflight = false
		select {
		case c.uploads.wake <- struct{}{}:
		default:
		}
	}
	c.mu.Unlock()
	return awaitNow(staged)
}

// PendingFileNotifications is how many file upload notifications wait for
// the service (in flight or not).
func (c *Core) PendingFileNotifications() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.uploads.Notes)
}

// forgetUploadsLocked drops a deleted device's upload records (its
// pending notifications stay: the service still gets them) and returns
// the change that stores it; c.mu held.
func (c *Core) forgetUploadsLocked(id string) (Change, bool) {
	if _, ok := c.uploads.Uploads[id]; !ok {
		return Change{}, false
	}
	delete(c.uploads.Uploads, id)
	return c.fileUploadChangeLocked(), true
}
