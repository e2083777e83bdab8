package emulator

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
)

// uploadHTTP posts body to the hub host's path with the device's SAS.
func uploadHTTP(t *testing.T, e *Emulator, id, key, path string, body any) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctxT(t), http.MethodPost, "https://"+e.WebSocketAddr()+path+"?api-version=2021-04-12", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", hubSAS(t, e, id, key, time.Hour))
	req.Header.Set("Content-Type", "application/json")
	res, err := (&http.Client{Transport: blobTransport(e)}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	rb, _ := io.ReadAll(res.Body)
	var m map[string]any
	_ = json.Unmarshal(rb, &m)
	return res.StatusCode, m
}

func blobTransport(e *Emulator) *http.Transport {
	return &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.CAPool(), MinVersion: tls.VersionTLS12}}
}

// TestFileUploadAPI: the hub's file upload API hands out a SAS the
// embedded blob endpoint accepts for that blob only, the notification
// (correlation id in the body or the path) ends the upload with the
// blob's size, and the eleventh concurrent upload is refused with IoT
// Hub's 403006.
func TestFileUploadAPI(t *testing.T) {
	t.Parallel()
	e := startEmu(t, nil)
	key, err := e.CreateDevice("up1")
	if err != nil {
		t.Fatal(err)
	}
	if e.BlobURL() == "" || !strings.Contains(e.StorageConnectionString(), "AccountKey=") {
		t.Fatalf("blob endpoint %q", e.BlobURL())
	}
	code, r := uploadHTTP(t, e, "up1", key, "/devices/up1/files", map[string]any{"blobName": "logs/a.txt"})
	if code != 200 {
		t.Fatalf("POST files: %d %v", code, r)
	}
	if r["blobName"] != "up1/logs/a.txt" || r["containerName"] != "fileuploads" || !strings.HasPrefix(r["sasToken"].(string), "?") {
		t.Fatalf("answer %v", r)
	}
	u := "https://" + r["hostName"].(string) + "/" + r["containerName"].(string) + "/" + r["blobName"].(string)
	data := make([]byte, 3<<20)
	_, _ = rand.Read(data)
	opts := &blockblob.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: &http.Client{Transport: blobTransport(e)}}}
	bb, err := blockblob.NewClientWithNoCredential(u+r["sasToken"].(string), opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bb.UploadBuffer(ctxT(t), data, &blockblob.UploadBufferOptions{BlockSize: 1 << 20}); err != nil {
		t.Fatalf("upload with the hub's SAS: %v", err)
	}
	// The same SAS does not reach another blob.
	other, _ := blockblob.NewClientWithNoCredential(strings.Replace(u, "a.txt", "b.txt", 1)+r["sasToken"].(string), opts)
	if _, err := other.UploadBuffer(ctxT(t), data[:10], nil); err == nil {
		t.Fatal("the SAS of a.txt wrote b.txt")
	}
	cid := r["correlationId"].(string)
	if code, r := uploadHTTP(t, e, "up1", key, "/devices/up1/files/notifications", map[string]any{"correlationId": cid, "isSuccess": true, "statusCode": 200, "statusDescription": "ok"}); code != 204 {
		t.Fatalf("notify: %d %v", code, r)
	}
	if code, _ := uploadHTTP(t, e, "up1", key, "/devices/up1/files/notifications", map[string]any{"correlationId": cid, "isSuccess": true}); code != 404 {
		t.Fatalf("second notification: %d, want 404", code)
	}
	ups := e.FileUploads("up1")
	if len(ups) != 1 || !ups[0].Success || ups[0].Size != int64(len(data)) {
		t.Fatalf("uploads %+v", ups)
	}
	// Read back with the account's Shared Key.
	c, err := azblob.NewClientFromConnectionString(e.StorageConnectionString(), &azblob.ClientOptions{ClientOptions: opts.ClientOptions})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if _, err := c.DownloadBuffer(ctxT(t), "fileuploads", "up1/logs/a.txt", got, nil); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v", err)
	}
	// Ten active uploads, then 403006; a failure notification in the path
	// form frees one.
	var cids []string
	for i := range 10 {
		code, r := uploadHTTP(t, e, "up1", key, "/devices/up1/files", map[string]any{"blobName": "f" + string(rune('a'+i))})
		if code != 200 {
			t.Fatalf("upload %d: %d %v", i, code, r)
		}
		cids = append(cids, r["correlationId"].(string))
	}
	code, r = uploadHTTP(t, e, "up1", key, "/devices/up1/files", map[string]any{"blobName": "eleven"})
	if code != 403 || !strings.Contains(r["Message"].(string), "DeviceMaximumActiveFileUploadLimitExceeded") {
		t.Fatalf("eleventh upload: %d %v", code, r)
	}
	if code, r := uploadHTTP(t, e, "up1", key, "/devices/up1/files/notifications/"+cids[0], map[string]any{"isSuccess": false, "statusCode": 500, "statusDescription": "disk"}); code != 204 {
		t.Fatalf("path notification: %d %v", code, r)
	}
	if code, r := uploadHTTP(t, e, "up1", key, "/devices/up1/files", map[string]any{"blobName": "eleven"}); code != 200 {
		t.Fatalf("upload after a failure freed a slot: %d %v", code, r)
	}
	// Another device's token does not open up1's uploads.
	key2, _ := e.CreateDevice("up2")
	if code, _ := uploadHTTP(t, e, "up2", key2, "/devices/up1/files", map[string]any{"blobName": "x"}); code != 401 {
		t.Fatalf("up2's token on up1: %d, want 401", code)
	}
}

// TestFileUploadsREST: IoT Central's /api/fileUploads configures the
// container and SAS lifetime devices get; the key is never shown; etags
// guard changes; DELETE returns to the defaults.
func TestFileUploadsREST(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{RESTAddr: "127.0.0.1:0"})
	tok := e.APIToken()
	if st, b := restDo(t, e, "GET", "/api/fileUploads", tok, nil); st != 404 {
		t.Fatalf("GET before PUT: %d %s", st, b)
	}
	if st, b := restDo(t, e, "PUT", "/api/fileUploads", tok, map[string]any{"container": "Bad_Name"}); st != 422 {
		t.Fatalf("bad container: %d %s", st, b)
	}
	st, b := restDo(t, e, "PUT", "/api/fileUploads", tok, map[string]any{"container": "devlogs", "sasTtl": "PT2H"})
	var f map[string]any
	if err := json.Unmarshal(b, &f); err != nil || st != 200 || f["container"] != "devlogs" || f["sasTtl"] != "PT2H" || f["etag"] == "" || f["state"] != "succeeded" {
		t.Fatalf("PUT: %d %s", st, b)
	}
	key, _ := e.CreateDevice("rest-up")
	code, r := uploadHTTP(t, e, "rest-up", key, "/devices/rest-up/files", map[string]any{"blobName": "a"})
	if code != 200 || r["containerName"] != "devlogs" {
		t.Fatalf("upload after PUT: %d %v", code, r)
	}
	if st, b := restDo(t, e, "PATCH", "/api/fileUploads", tok, map[string]any{"container": "other", "etag": `"stale"`}); st != 412 {
		t.Fatalf("PATCH with a stale etag: %d %s", st, b)
	}
	cs := "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=c2VjcmV0;BlobEndpoint=https://127.0.0.1:1/acct"
	st, b = restDo(t, e, "PATCH", "/api/fileUploads", tok, map[string]any{"connectionString": cs})
	f = nil
	_ = json.Unmarshal(b, &f)
	if st != 200 || strings.Contains(string(b), "c2VjcmV0") || !strings.Contains(f["connectionString"].(string), "AccountKey=<redacted>") || f["account"] != "acct" {
		t.Fatalf("PATCH connection string: %d %s", st, b)
	}
	if st, b := restDo(t, e, "PATCH", "/api/fileUploads", tok, map[string]any{"sasTtl": "PT30M"}); st != 200 || strings.Contains(string(b), "c2VjcmV0") || !strings.Contains(string(b), "devlogs") {
		t.Fatalf("PATCH TTL: %d %s", st, b)
	}
	if e.core.FileUploadSettings().ConnectionString != cs {
		t.Fatal("a PATCH without connectionString lost the stored key")
	}
	if st, _ := restDo(t, e, "DELETE", "/api/fileUploads", tok, nil); st != 204 {
		t.Fatalf("DELETE: %d", st)
	}
	if st, _ := restDo(t, e, "GET", "/api/fileUploads", tok, nil); st != 404 {
		t.Fatalf("GET after DELETE: %d", st)
	}
	code, r = uploadHTTP(t, e, "rest-up", key, "/devices/rest-up/files", map[string]any{"blobName": "b"})
	if code != 200 || r["containerName"] != "fileuploads" {
		t.Fatalf("upload after DELETE: %d %v", code, r)
	}
}

// TestFileUploadsSurviveRestart: with a data directory the uploads, their
// pending notification, the configuration, the blobs and the account key
// survive a restart.
func TestFileUploadsSurviveRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e := startEmu(t, &Options{DataDir: dir})
	key, err := e.CreateDevice("keep-up")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.SetFileUploadSettings(ctxT(t), FileUploadSettings{Container: "kept"}); err != nil {
		t.Fatal(err)
	}
	code, r := uploadHTTP(t, e, "keep-up", key, "/devices/keep-up/files", map[string]any{"blobName": "a.bin"})
	if code != 200 {
		t.Fatalf("POST files: %d %v", code, r)
	}
	opts := &blockblob.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: &http.Client{Transport: blobTransport(e)}}}
	bb, _ := blockblob.NewClientWithNoCredential("https://"+r["hostName"].(string)+"/kept/keep-up/a.bin"+r["sasToken"].(string), opts)
	if _, err := bb.UploadBuffer(ctxT(t), []byte("kept bytes"), nil); err != nil {
		t.Fatal(err)
	}
	if code, _ := uploadHTTP(t, e, "keep-up", key, "/devices/keep-up/files/notifications", map[string]any{"correlationId": r["correlationId"], "isSuccess": true, "statusCode": 201}); code != 204 {
		t.Fatalf("notify: %d", code)
	}
	cs := e.StorageConnectionString()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e2 := startEmu(t, &Options{DataDir: dir})
	ups := e2.FileUploads("keep-up")
	if len(ups) != 1 || !ups[0].Success || ups[0].Size != 10 || ups[0].Container != "kept" {
		t.Fatalf("uploads after restart %+v", ups)
	}
	if e2.core.PendingFileNotifications() != 1 {
		t.Fatalf("%d pending notifications after restart, want 1", e2.core.PendingFileNotifications())
	}
	if e2.core.FileUploadSettings().Container != "kept" {
		t.Fatal("the configuration was lost")
	}
	// The same account key (the port may differ).
	key1 := cs[strings.Index(cs, "AccountKey="):strings.Index(cs, ";BlobEndpoint")]
	if !strings.Contains(e2.StorageConnectionString(), key1) {
		t.Fatal("the account key changed across the restart")
	}
	c, err := azblob.NewClientFromConnectionString(e2.StorageConnectionString(), &azblob.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: &http.Client{Transport: blobTransport(e2)}}})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 10)
	if _, err := c.DownloadBuffer(ctxT(t), "kept", "keep-up/a.bin", got, nil); err != nil || string(got) != "kept bytes" {
		t.Fatalf("blob after restart %q: %v", got, err)
	}
}
