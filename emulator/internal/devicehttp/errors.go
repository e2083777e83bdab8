package devicehttp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// ErrBadRequest reports a request IoT Hub's device API refuses with 400
// ArgumentInvalid (a malformed batch, a bad header).
var ErrBadRequest = errors.New("bad request")

// ErrorOf maps an error of the core's vocabulary (or of this package) to
// IoT Hub's device-side answer: the HTTP status, the error code name and
// its number.
func ErrorOf(err error) (status int, code string, num int) {
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, core.ErrUnauthorized), errors.Is(err, core.ErrForbidden):
		return http.StatusUnauthorized, "IotHubUnauthorizedAccess", 401002
	case errors.Is(err, core.ErrPreconditionFailed):
		return http.StatusPreconditionFailed, "DeviceMessageLockLost", 412002
	case errors.Is(err, core.ErrTooLarge), errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, "MessageTooLarge", 413002
	case errors.Is(err, core.ErrThrottled):
		return http.StatusTooManyRequests, "ThrottlingException", 429001
	case errors.Is(err, core.ErrQuotaExceeded):
		return http.StatusForbidden, "IotHubQuotaExceeded", 403002
	case errors.Is(err, core.ErrQueueFull):
		return http.StatusForbidden, "DeviceMaximumQueueDepthExceeded", 403004
	case errors.Is(err, core.ErrNotFound):
		return http.StatusNotFound, "DeviceNotFound", 404001
	case errors.Is(err, core.ErrInvalid), errors.Is(err, ErrBadRequest):
		return http.StatusBadRequest, "ArgumentInvalid", 400004
	case errors.Is(err, core.ErrUnavailable), errors.Is(err, core.ErrClosed), errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable, "ServiceUnavailable", 503001
	default:
		return http.StatusInternalServerError, "ServerError", 500001
	}
}

// WriteError answers r with err in IoT Hub's device-side error shape (see
// ErrorOf); a file upload or module endpoint on the same host may use it.
// The text is err's, which the core keeps free of tokens and keys.
func (h *Handler) WriteError(w http.ResponseWriter, r *http.Request, err error) {
	status, code, num := ErrorOf(err)
	h.fail(w, r, status, code, num, err.Error())
}

// fail writes IoT Hub's error body and the iothub-errorcode header.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, status int, code string, num int, text string) {
	h.log.Info("device HTTPS request refused", "method", r.Method, "path", r.URL.Path, "status", status, "code", code, "error", text)
	WriteErrorBody(w, status, code, num, text)
}

// WriteErrorBody writes {"Message":"ErrorCode:{code};{text}",
// "ExceptionMessage":"Tracking ID:...-TimeStamp:... (errorCode {num})"}
// with status and the iothub-errorcode header, as IoT Hub's device
// endpoints answer (azure-iot-http-base parses code and text from Message).
func WriteErrorBody(w http.ResponseWriter, status int, code string, num int, text string) {
	w.Header().Set("iothub-errorcode", code)
	body, err := json.Marshal(map[string]any{
		"Message": fmt.Sprintf("ErrorCode:%s;%s", code, text),
		"ExceptionMessage": fmt.Sprintf("Tracking ID:%s-G:0-TimeStamp:%s (errorCode %d)",
			core.RandomHex(16), time.Now().UTC().Format("01/02/2006 15:04:05"), num),
	})
	if err != nil { // strings only
		body = []byte(`{"Message":"ErrorCode:ServerError;encode error"}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// quote shows a client-given value in an error text, bounded.
func quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return strconv.Quote(s)
}
