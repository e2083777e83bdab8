package memoutbox_test

import (
	"errors"
	"testing"

	"go.uber.org/goleak"

	"github.com/iotc-go/iotc/adapters/memoutbox"
	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/internal/outboxtest"
	"github.com/iotc-go/iotc/ports"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestContract(t *testing.T) {
	outboxtest.Run(t, outboxtest.Factory{
		Open: func(t *testing.T, l domain.OutboxLimit) ports.Outbox {
			o, err := memoutbox.New(l)
			if err != nil {
				t.Fatal(err)
			}
			return o
		},
	})
}

func TestNegativeLimit(t *testing.T) {
	if _, err := memoutbox.New(domain.OutboxLimit{Messages: -1}); !errors.Is(err, domain.ErrInvalidConfig) {
		t.Fatalf("New: %v, want ErrInvalidConfig", err)
	}
}
