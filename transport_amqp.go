package iotc

import (
	"fmt"
	"log/slog"

	"github.com/iotc-go/iotc/adapters/amqp"
	"github.com/iotc-go/iotc/ports"
)

// amqpTransport builds the AMQP adapter for t (AMQP or AMQPWebSockets):
// AMQPPort (or Port when t is Transport) over TLS, WebSocketPort (or
// Port) and Proxy over WebSockets.
func (cfg Config) amqpTransport(t Transport, logger *slog.Logger) (ports.Transport, error) {
	o := &amqp.Options{RootCAs: cfg.RootCAs, ProductInfo: cfg.ProductInfo, ConnectTimeout: cfg.ConnectTimeout, Logger: logger}
	switch t {
	case AMQP:
		o.Port = cfg.AMQPPort
	case AMQPWebSockets:
		if cfg.Proxy != nil && cfg.Proxy.Scheme != "http" {
			return nil, fmt.Errorf("%w: proxy %s: only http:// proxies are supported", ErrInvalidConfig, cfg.Proxy.Redacted())
		}
		o.WebSockets, o.Port, o.Proxy = true, cfg.WebSocketPort, cfg.Proxy
	}
	if o.Port == 0 && t == cfg.Transport {
		o.Port = cfg.Port
	}
	return amqp.New(o), nil
}
