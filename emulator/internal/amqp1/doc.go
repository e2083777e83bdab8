// Package amqp1 is a minimal AMQP 1.0 server: the protocol layer the IoT Hub
// emulator speaks to devices over AMQP (TLS 5671 and AMQPWSB10 WebSockets).
//
// It is written from the OASIS AMQP 1.0 specification (2012-10-29) and holds
// four layers, each usable on its own:
//
//   - the type system (Part 1): [Decode], [Encode] and the Go types [Symbol],
//     [UUID], [Map], [Array], [Described] and friends;
//   - frames (Part 2 §2.3): [ReadFrame] and [WriteFrame];
//   - performatives (Part 2 §2.7, Part 3 §3.4–3.5, Part 5 §5.3) as Go structs
//     ([Open], [Begin], [Attach], [Flow], [Transfer], [Disposition], [Detach],
//     [End], [Close], [SASLInit], ...) decoded by [DecodePerformative];
//   - a server connection engine, [Serve], that negotiates the protocol header
//     (with or without SASL), answers open/begin/attach, keeps the session
//     windows, link credit and delivery bookkeeping, reassembles multi-frame
//     transfers and sends heartbeats, and hands links to a [Handler].
//
// Message sections are encoded and decoded with the public
// github.com/Azure/go-amqp Message.MarshalBinary/UnmarshalBinary; the
// [Message] type is an alias of amqp.Message.
//
// Everything read from the network is untrusted: lengths are checked against
// the remaining input and against configured maxima, nesting depth is bounded,
// and malformed input ends the connection with a close frame carrying an
// error (amqp:decode-error, amqp:connection:framing-error, ...), never a panic.
//
// Not implemented (not needed for IoT Hub emulation): transactions (Part 4),
// link recovery and resume (unsettled maps are ignored), TLS inside AMQP
// (protocol id 2), sasl-challenge/sasl-response rounds, and the decimal types
// beyond carrying their raw bytes.
package amqp1
