package domain

import (
	"encoding/json"
	"fmt"
	"strings"
)

// ComponentSeparator splits "component*command" method names.
const ComponentSeparator = "*"

// Command is a command sent to the device: a direct method, or a
// command IoT Central queued while the device was offline.
type Command struct {
	// Name is the command name without component.
	Name string
	// Component is the IoT Plug and Play component, empty for the root.
	Component string
	// Payload is the request JSON (may be empty).
	Payload json.RawMessage
	// RequestID correlates the response ($rid over MQTT); empty for
	// queued commands, which take no response.
	RequestID string
	// Queued is true for a command delivered as a cloud-to-device message.
	Queued bool
}

// Unmarshal decodes the request payload into v.
func (c Command) Unmarshal(v any) error {
	if err := json.Unmarshal(c.Payload, v); err != nil {
		return fmt.Errorf("iotc: command %s payload: %w", c.Name, err)
	}
	return nil
}

// SplitMethodName splits a direct-method name "component*command" into its
// component and command; a name without '*' belongs to the root component.
func SplitMethodName(method string) (component, name string) {
	if c, n, ok := strings.Cut(method, ComponentSeparator); ok {
		return c, n
	}
	return "", method
}

// ParseQueuedCommandName interprets the method-name property of a
// cloud-to-device command: any "prefix:" is dropped (the older IoT Central
// form "Commands:setLed"), then "component*command" is split.
func ParseQueuedCommandName(methodName string) (component, name string) {
	if i := strings.LastIndex(methodName, ":"); i >= 0 {
		methodName = methodName[i+1:]
	}
	return SplitMethodName(methodName)
}

// CommandResponse is the device's answer to a direct method.
type CommandResponse struct {
	// Status is any status the device chooses; 0 means 200.
	Status int
	// Payload is encoded as JSON; nil sends an empty JSON object.
	Payload any
}

// Encode returns the status and JSON body to send. It returns
// ErrMessageTooLarge over MaxMethodPayloadSize and an error when the
// payload cannot be encoded as JSON.
func (r CommandResponse) Encode() (int, []byte, error) {
	status := r.Status
	if status == 0 {
		status = 200
	}
	var body []byte
	switch p := r.Payload.(type) {
	case nil:
		body = []byte("{}")
	case json.RawMessage:
		if !json.Valid(p) {
			return 0, nil, fmt.Errorf("%w: command response payload is not JSON", ErrInvalidConfig)
		}
		body = p
	default:
		var err error
		if body, err = json.Marshal(p); err != nil {
			return 0, nil, fmt.Errorf("iotc: encode command response: %w", err)
		}
	}
	if len(body) > MaxMethodPayloadSize {
		return 0, nil, fmt.Errorf("%w: command response of %d bytes exceeds %d", ErrMessageTooLarge, len(body), MaxMethodPayloadSize)
	}
	return status, body, nil
}
