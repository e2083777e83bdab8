package app

import (
	"context"
	"sync"

	"github.com/iotc-go/iotc/domain"
)

// PropertyHandler applies one writable property and returns the
// acknowledgement to report: Status 200 (or 0) applied, 202 accepted and
// still in progress (report the final answer later with Client.AckProperty),
// 4xx/5xx refused, with an optional Description and the applied Value.
type PropertyHandler func(ctx context.Context, p domain.Property) domain.PropertyAck

// CommandHandler runs a direct-method command and returns its response
// (any status, a JSON-encodable payload of at most 128 KiB).
type CommandHandler func(ctx context.Context, c domain.Command) domain.CommandResponse

// QueuedCommandHandler runs a command IoT Central queued while the device
// was offline and says how to settle it: domain.Complete (the zero value)
// when it was handled, domain.Abandon to have it delivered again,
// domain.Reject to dead-letter it.
type QueuedCommandHandler func(ctx context.Context, c domain.Command) domain.Outcome

// CloudMessageHandler receives a cloud-to-device message that is not a
// queued command and says how to settle it (see QueuedCommandHandler).
type CloudMessageHandler func(ctx context.Context, m domain.CloudMessage) domain.Outcome

// handlerSet is the user's handlers: one job (who handles what), one lock.
type handlerSet struct {
	mu         sync.RWMutex
	property   PropertyHandler
	command    CommandHandler
	queued     QueuedCommandHandler
	message    CloudMessageHandler
	properties map[string]PropertyHandler // by propKey(component, name)
	commands   map[string]CommandHandler  // by propKey(component, name)
}

// set changes the handlers under the lock.
func (hs *handlerSet) set(fn func(*handlerSet)) {
	hs.mu.Lock()
	fn(hs)
	hs.mu.Unlock()
}

// setHandler sets m[k] or, when remove is set (a nil handler), deletes
// it, making m on first use.
func setHandler[H any](m map[string]H, k string, h H, remove bool) map[string]H {
	if remove {
		delete(m, k)
		return m
	}
	if m == nil {
		m = map[string]H{}
	}
	m[k] = h
	return m
}

// propertyHandler returns the handler of p: its own, else the catch-all.
func (hs *handlerSet) propertyHandler(p domain.Property) PropertyHandler {
	hs.mu.RLock()
	defer hs.mu.RUnlock()
	if h, ok := hs.properties[propKey(p.Component, p.Name)]; ok {
		return h
	}
	return hs.property
}

// commandHandler returns the handler of a command: its own, else the
// catch-all, else nil.
func (hs *handlerSet) commandHandler(component, name string) CommandHandler {
	hs.mu.RLock()
	defer hs.mu.RUnlock()
	if h, ok := hs.commands[propKey(component, name)]; ok {
		return h
	}
	return hs.command
}

// cloudHandlers returns the queued-command and cloud-message handlers.
func (hs *handlerSet) cloudHandlers() (QueuedCommandHandler, CloudMessageHandler) {
	hs.mu.RLock()
	defer hs.mu.RUnlock()
	return hs.queued, hs.message
}

// OnProperty sets the writable-property handler (nil removes it). Set it
// before Connect so that the startup twin sync reaches it: without a
// handler, desired properties are left unacknowledged (never auto-acked).
// Handlers run one at a time, in the order the patches arrived.
func (c *Client) OnProperty(h PropertyHandler) {
	c.disp.handlers.set(func(hs *handlerSet) { hs.property = h })
}

// HandleProperty sets the handler of the writable property name of
// component ("" for the root), ahead of the OnProperty catch-all; nil
// removes it.
func (c *Client) HandleProperty(component, name string, h PropertyHandler) {
	c.disp.handlers.set(func(hs *handlerSet) { hs.properties = setHandler(hs.properties, propKey(component, name), h, h == nil) })
}

// OnCommand sets the catch-all direct-method handler (nil removes it).
// Commands that neither a HandleCommand handler nor this one takes are
// answered 501 with {"error": "..."}. A panicking handler is answered 500.
// Commands run one at a time in arrival order, on a goroutine separate from
// properties and messages.
func (c *Client) OnCommand(h CommandHandler) {
	c.disp.handlers.set(func(hs *handlerSet) { hs.command = h })
}

// HandleCommand sets the handler of the command name of component (""
// for the root), ahead of the OnCommand catch-all; nil removes it.
func (c *Client) HandleCommand(component, name string, h CommandHandler) {
	c.disp.handlers.set(func(hs *handlerSet) { hs.commands = setHandler(hs.commands, propKey(component, name), h, h == nil) })
}

// OnQueuedCommand sets the handler of commands queued while the device
// was offline (cloud-to-device messages with a "method-name" property,
// "prefix:name" and "component*name" both understood). When it is nil,
// queued commands go to the OnCommand handler with Queued set, its
// response is discarded and the message completed.
func (c *Client) OnQueuedCommand(h QueuedCommandHandler) {
	c.disp.handlers.set(func(hs *handlerSet) { hs.queued = h })
}

// OnCloudMessage sets the handler of other cloud-to-device messages.
// Without one they are logged and completed.
func (c *Client) OnCloudMessage(h CloudMessageHandler) {
	c.disp.handlers.set(func(hs *handlerSet) { hs.message = h })
}
