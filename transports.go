package iotc

import (
	"fmt"
	"log/slog"
	"slices"

	"github.com/iotc-go/iotc/adapters/amqp"
	"github.com/iotc-go/iotc/adapters/amqpws"
	"github.com/iotc-go/iotc/adapters/mqtt"
	"github.com/iotc-go/iotc/adapters/mqttws"
	"github.com/iotc-go/iotc/ports"
)

// transports builds the adapters cfg selects: cfg.Transport first, then
// cfg.Fallback in order. Errors wrap ErrInvalidConfig: an unknown
// transport, a transport listed twice, a bad port or proxy.
func (cfg Config) transports(logger *slog.Logger) ([]ports.Transport, error) {
	if cfg.WebSocketPort < 0 || cfg.WebSocketPort > 65535 {
		return nil, fmt.Errorf("%w: WebSocket port %d", ErrInvalidConfig, cfg.WebSocketPort)
	}
	if cfg.AMQPPort < 0 || cfg.AMQPPort > 65535 {
		return nil, fmt.Errorf("%w: AMQP port %d", ErrInvalidConfig, cfg.AMQPPort)
	}
	order := append([]Transport{cfg.Transport}, cfg.Fallback...)
	out := make([]ports.Transport, 0, len(order))
	for i, t := range order {
		if slices.Contains(order[:i], t) {
			return nil, fmt.Errorf("%w: transport %s listed twice (Transport and Fallback)", ErrInvalidConfig, t)
		}
		tr, err := cfg.transport(t, logger)
		if err != nil {
			return nil, err
		}
		out = append(out, tr)
	}
	return out, nil
}

// transport builds one adapter.
func (cfg Config) transport(t Transport, logger *slog.Logger) (ports.Transport, error) {
	switch t {
	case MQTT:
		port := 0 // a fallback uses the default port
		if t == cfg.Transport {
			port = cfg.Port
		}
		return mqtt.New(&mqtt.Options{Port: port, RootCAs: cfg.RootCAs, ProductInfo: cfg.ProductInfo, ConnectTimeout: cfg.ConnectTimeout, Logger: logger}), nil
	case MQTTWebSockets:
		if cfg.Proxy != nil && cfg.Proxy.Scheme != "http" {
			return nil, fmt.Errorf("%w: proxy %s: only http:// proxies are supported", ErrInvalidConfig, cfg.Proxy.Redacted())
		}
		port := cfg.WebSocketPort
		if port == 0 && t == cfg.Transport {
			port = cfg.Port
		}
		return mqttws.New(&mqttws.Options{Port: port, RootCAs: cfg.RootCAs, Proxy: cfg.Proxy, ProductInfo: cfg.ProductInfo, ConnectTimeout: cfg.ConnectTimeout, Logger: logger}), nil
	case AMQP, AMQPWebSockets:
		return cfg.amqpTransport(t, logger)
	}
	return nil, fmt.Errorf("%w: unknown transport %d", ErrInvalidConfig, int(t))
}

// amqpTransport builds the AMQP adapter for t: AMQP over TLS on AMQPPort
// (or Port when t is Transport), or AMQPWebSockets on WebSocketPort (or
// Port) through Proxy.
func (cfg Config) amqpTransport(t Transport, logger *slog.Logger) (ports.Transport, error) {
	if t == AMQPWebSockets {
		if cfg.Proxy != nil && cfg.Proxy.Scheme != "http" {
			return nil, fmt.Errorf("%w: proxy %s: only http:// proxies are supported", ErrInvalidConfig, cfg.Proxy.Redacted())
		}
		port := cfg.WebSocketPort
		if port == 0 && t == cfg.Transport {
			port = cfg.Port
		}
		return amqpws.New(&amqpws.Options{Port: port, RootCAs: cfg.RootCAs, Proxy: cfg.Proxy, ProductInfo: cfg.ProductInfo, ConnectTimeout: cfg.ConnectTimeout, Logger: logger}), nil
	}
	port := cfg.AMQPPort
	if port == 0 && t == cfg.Transport {
		port = cfg.Port
	}
	return amqp.New(&amqp.Options{Port: port, RootCAs: cfg.RootCAs, ProductInfo: cfg.ProductInfo, ConnectTimeout: cfg.ConnectTimeout, Logger: logger}), nil
}
