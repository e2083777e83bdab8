package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// serviceClient invokes direct methods as the official IoT Hub service
// SDKs do: POST https://{hub}/twins/{id}/methods?api-version=2021-04-12
// with a SAS token of a shared access policy (skn), on the emulator's hub
// host listener (the WebSocket listener). Its token is made once, valid
// for an hour, as the SDKs reuse theirs.
type serviceClient struct {
	base, token string
	http        *http.Client
}

// newServiceClient parses "HostName=...;SharedAccessKeyName=...;SharedAccessKey=..."
// and calls addr (host:port of the hub host listener), verifying its TLS
// certificate with roots.
func newServiceClient(connStr, addr string, roots *x509.CertPool) (*serviceClient, error) {
	parts := map[string]string{}
	for _, kv := range strings.Split(connStr, ";") {
		k, v, ok := strings.Cut(kv, "=")
		if ok {
			parts[k] = v
		}
	}
	host, name, key := parts["HostName"], parts["SharedAccessKeyName"], parts["SharedAccessKey"]
	kb, err := base64.StdEncoding.DecodeString(key)
	if host == "" || name == "" || err != nil {
		return nil, errors.New("the emulator gave no usable service connection string")
	}
	se := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
	sr := url.QueryEscape(host)
	mac := hmac.New(sha256.New, kb)
	mac.Write([]byte(sr + "\n" + se))
	sig := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	tok := "SharedAccessSignature sr=" + sr + "&sig=" + url.QueryEscape(sig) + "&se=" + se + "&skn=" + url.QueryEscape(name)
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12, ServerName: host},
		MaxIdleConnsPerHost: 16,
	}
	return &serviceClient{base: "https://" + addr, token: tok, http: &http.Client{Transport: tr}}, nil
}

// invoke runs method name on device id and returns the device's status.
func (c *serviceClient) invoke(ctx context.Context, id, name string, payload any, timeout int) (int, error) {
	body, err := json.Marshal(map[string]any{"methodName": name, "payload": payload, "responseTimeoutInSeconds": timeout})
	if err != nil {
		return 0, fmt.Errorf("method request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/twins/"+url.PathEscape(id)+"/methods?api-version=2021-04-12", bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("method request: %w", err)
	}
	req.Header.Set("Authorization", c.token)
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("method %s on %s: %w", name, id, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, fmt.Errorf("method %s on %s: %w", name, id, err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("method %s on %s: HTTP %d: %s", name, id, resp.StatusCode, bytes.TrimSpace(data))
	}
	var ans struct {
		Status int `json:"status"`
	}
	if err := json.Unmarshal(data, &ans); err != nil {
		return 0, fmt.Errorf("method %s on %s: decode the answer: %w", name, id, err)
	}
	return ans.Status, nil
}
