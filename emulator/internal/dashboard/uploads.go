package dashboard

import (
	"fmt"
	"time"
)

// Upload is one file upload of a device as the device page lists it.
type Upload struct {
	// BlobName is the blob's name in its container.
	BlobName string
	// URL is the blob's URL (no SAS).
	URL string
	// Started is when the device asked for it.
	Started time.Time
	// State is "uploading", "succeeded" or "failed".
	State string
	// Detail is the size of a success or the device's status and text of
	// a failure.
	Detail string
}

// UploadsBackend is the optional part of Backend that lists a device's
// file uploads; without it the device page shows none.
type UploadsBackend interface {
	// FileUploads lists the device's uploads, oldest first.
	FileUploads(id string) []Upload
}

// FileUploads implements UploadsBackend.
func (b coreBackend) FileUploads(id string) []Upload {
	var out []Upload
	for _, u := range b.c.FileUploads(id) {
		up := Upload{BlobName: u.BlobName, URL: u.BlobURI(), Started: u.Started, State: "uploading"}
		switch {
		case u.Ended.IsZero():
		case u.Success:
			up.State, up.Detail = "succeeded", fmt.Sprintf("%d bytes", u.Size)
		default:
			up.State, up.Detail = "failed", fmt.Sprintf("%d %s", u.StatusCode, u.Description)
		}
		out = append(out, up)
	}
	return out
}

// uploadsOf lists the device's uploads newest first.
func (h *Handler) uploadsOf(id string) []Upload {
	ub, ok := h.b.(UploadsBackend)
	if !ok {
		return nil
	}
	ups := ub.FileUploads(id)
	for i, j := 0, len(ups)-1; i < j; i, j = i+1, j-1 {
		ups[i], ups[j] = ups[j], ups[i]
	}
	return ups
}
