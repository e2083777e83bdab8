// Package outboxe2e holds the end-to-end test of the durable outbox: a
// device process enqueues telemetry while the hub is unreachable, is killed
// with SIGKILL, and a new process on the same outbox directory delivers
// every accepted message to the emulator, in order. The device runs in a
// child process: the test binary re-executed with IOTC_OUTBOX_E2E_CHILD set.
package outboxe2e
