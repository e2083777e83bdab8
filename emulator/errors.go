package emulator

import "errors"

// Errors returned by the operator methods of *Emulator. Match them with
// errors.Is; returned errors wrap them with the device or group concerned.
var (
	// ErrNotFound reports an unknown device, group, component value or telemetry name.
	ErrNotFound = errors.New("emulator: not found")
	// ErrConflict reports a create of something that already exists.
	ErrConflict = errors.New("emulator: already exists")
	// ErrInvalid reports a bad argument: a malformed id, key, certificate or patch.
	ErrInvalid = errors.New("emulator: invalid argument")
	// ErrDeviceOffline reports a direct method to a device that is not
	// connected or not subscribed to methods (IoT Hub: 404103).
	ErrDeviceOffline = errors.New("emulator: device is not online")
	// ErrTimeout reports a direct method the device did not answer in time
	// (IoT Hub: 504101).
	ErrTimeout = errors.New("emulator: device did not respond in time")
	// ErrQueueFull reports a cloud-to-device message refused because the
	// device already has MaxC2DQueue messages pending (IoT Hub: 403004).
	ErrQueueFull = errors.New("emulator: device queue is full")
	// ErrTooLarge reports a cloud-to-device body over MaxC2DBody or a desired
	// patch that would make the section exceed MaxTwinSection.
	ErrTooLarge = errors.New("emulator: over a service size limit")
	// ErrDataFile reports, from Start, a DataDir state file that cannot be
	// read or is not a valid state file; the file is left as it was.
	ErrDataFile = errors.New("emulator: bad data directory state file")
	// ErrClosed reports a call on a closed emulator.
	ErrClosed = errors.New("emulator: closed")
)
