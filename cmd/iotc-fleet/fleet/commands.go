package fleet

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// APIVersion is the IoT Central data-plane API version the command client
// sends.
const APIVersion = "2022-07-31"

// CommandClient invokes device commands through an IoT Central (or
// emulator) REST API: POST /api/devices/{id}/commands/{name}. It is safe
// for concurrent use.
type CommandClient struct {
	base  string
	token string
	http  *http.Client
}

// NewCommandClient calls the API at baseURL ("https://host:port") with the
// API token sent bare in the Authorization header (never logged); roots
// verifies the server (nil: system roots).
func NewCommandClient(baseURL, token string, roots *x509.CertPool) (*CommandClient, error) {
	u, err := url.Parse(baseURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("%w: REST base URL must be https://host[:port]", ErrConfig)
	}
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     30 * time.Second,
	}
	return &CommandClient{base: u.Scheme + "://" + u.Host, token: token, http: &http.Client{Transport: tr}}, nil
}

// CommandResult is the answer to one command.
type CommandResult struct {
	// HTTPStatus is the REST status (201 when the device answered).
	HTTPStatus int
	// ResponseCode is the device's status; Response its payload.
	ResponseCode int
	Response     json.RawMessage
}

// Invoke runs command name on device id with request as its payload and
// waits for the device's answer (responseTimeout seconds, 5 to 300).
// Errors: transport failures, a status other than 201 (with the service's
// message), an undecodable body.
func (c *CommandClient) Invoke(ctx context.Context, id, name string, request any, responseTimeout int) (CommandResult, error) {
	body, err := json.Marshal(map[string]any{"request": request, "responseTimeout": responseTimeout})
	if err != nil {
		return CommandResult{}, fmt.Errorf("fleet: command request: %w", err)
	}
	u := c.base + "/api/devices/" + url.PathEscape(id) + "/commands/" + url.PathEscape(name) + "?api-version=" + APIVersion
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return CommandResult{}, fmt.Errorf("fleet: command request: %w", err)
	}
	req.Header.Set("Authorization", c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return CommandResult{}, fmt.Errorf("fleet: command %s on %s: %w", name, id, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return CommandResult{}, fmt.Errorf("fleet: command %s on %s: read the answer: %w", name, id, err)
	}
	res := CommandResult{HTTPStatus: resp.StatusCode}
	if resp.StatusCode != http.StatusCreated {
		return res, fmt.Errorf("fleet: command %s on %s: HTTP %d: %s", name, id, resp.StatusCode, bytes.TrimSpace(data))
	}
	var ans struct {
		ResponseCode int             `json:"responseCode"`
		Response     json.RawMessage `json:"response"`
	}
	if err := json.Unmarshal(data, &ans); err != nil {
		return res, fmt.Errorf("fleet: command %s on %s: decode the answer: %w", name, id, err)
	}
	res.ResponseCode, res.Response = ans.ResponseCode, ans.Response
	return res, nil
}

// CloseIdle closes the client's idle connections.
func (c *CommandClient) CloseIdle() { c.http.CloseIdleConnections() }
