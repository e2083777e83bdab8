package emulator

import "github.com/iotc-go/iotc/emulator/internal/core"

// Errors returned by the operator methods of *Emulator. Match them with
// errors.Is; returned errors wrap them with the device or group concerned.
var (
	// ErrNotFound reports an unknown device, group, component value or telemetry name.
	ErrNotFound = core.ErrNotFound
	// ErrConflict reports a create of something that already exists.
	ErrConflict = core.ErrConflict
	// ErrInvalid reports a bad argument: a malformed id, key, certificate or patch.
	ErrInvalid = core.ErrInvalid
	// ErrDeviceOffline reports a direct method to a device that is not
	// connected or not subscribed to methods (IoT Hub: 404103).
	ErrDeviceOffline = core.ErrDeviceOffline
	// ErrTimeout reports a direct method the device did not answer in time
	// (IoT Hub: 504101).
	ErrTimeout = core.ErrTimeout
	// ErrQueueFull reports a cloud-to-device message refused because the
	// device already has MaxC2DQueue messages pending (IoT Hub: 403004).
	ErrQueueFull = core.ErrQueueFull
	// ErrTooLarge reports a cloud-to-device body over MaxC2DBody or a desired
	// patch that would make the section exceed MaxTwinSection.
	ErrTooLarge = core.ErrTooLarge
	// ErrDataFile reports, from Start, a DataDir state file that cannot be
	// read or is not a valid state file; the file is left as it was.
	ErrDataFile = core.ErrDataFile
	// ErrPreconditionFailed reports an If-Match etag that is not the
	// current one (IoT Hub service API: 412).
	ErrPreconditionFailed = core.ErrPreconditionFailed
	// ErrClosed reports a call on a closed emulator.
	ErrClosed = core.ErrClosed
)
