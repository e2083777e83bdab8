package amqp1

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Frame types (Part 2 §2.3.1, Part 5 §5.3.1).
const (
	// FrameTypeAMQP carries a performative (and, for transfer, a payload).
	FrameTypeAMQP uint8 = 0
	// FrameTypeSASL carries one SASL frame body during the SASL exchange.
	FrameTypeSASL uint8 = 1
)

// FrameHeaderSize is the fixed part of every frame header (size, doff, type,
// channel). A frame of exactly this size and doff 2 is an empty frame
// (a heartbeat).
const FrameHeaderSize = 8

// MinMaxFrameSize is the smallest max-frame-size a peer may announce
// (MIN-MAX-FRAME-SIZE, Part 2 §2.7.1): 512 bytes.
const MinMaxFrameSize = 512

// ErrFraming is wrapped by every error of [ReadFrame] about a malformed frame
// header (size below 8, doff below 2 or past the frame) and by
// [ErrFrameTooLarge].
var ErrFraming = errors.New("amqp1: framing error")

// ErrFrameTooLarge is returned (wrapped, and wrapping [ErrFraming]) by
// [ReadFrame] when a frame announces a size above the reader's maximum.
var ErrFrameTooLarge = fmt.Errorf("%w: frame larger than max-frame-size", ErrFraming)

// Frame is one decoded frame. Body holds the frame body after the (skipped)
// extended header: a performative followed by any payload. An empty Body is
// an empty frame, used as a heartbeat.
type Frame struct {
	// Type is FrameTypeAMQP or FrameTypeSASL (other values are reported as read).
	Type uint8
	// Channel is the channel number (AMQP frames); ignored for SASL frames.
	Channel uint16
	// Body is the frame body; it is owned by the caller.
	Body []byte
}

// ReadFrame reads one frame from r. Frames larger than maxSize bytes (header
// included) fail with [ErrFrameTooLarge] before their body is read; maxSize
// below [MinMaxFrameSize] is raised to it. Truncated input returns
// io.ErrUnexpectedEOF (io.EOF when r ends cleanly between frames). The
// extended header is skipped. Other errors wrap [ErrFraming] or are r's.
func ReadFrame(r io.Reader, maxSize uint32) (Frame, error) {
	var hdr [FrameHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return Frame{}, err
	}
	return readFrameBody(r, hdr, maxSize)
}

func readFrameBody(r io.Reader, hdr [FrameHeaderSize]byte, maxSize uint32) (Frame, error) {
	maxSize = max(maxSize, MinMaxFrameSize)
	size := binary.BigEndian.Uint32(hdr[0:4])
	doff := uint32(hdr[4])
	f := Frame{Type: hdr[5], Channel: binary.BigEndian.Uint16(hdr[6:8])}
	switch {
	case size < FrameHeaderSize:
		return Frame{}, fmt.Errorf("%w: frame size %d below the 8-byte header", ErrFraming, size)
	case size > maxSize:
		return Frame{}, fmt.Errorf("%w: %d bytes, max %d", ErrFrameTooLarge, size, maxSize)
	case doff < 2:
		return Frame{}, fmt.Errorf("%w: doff %d below 2", ErrFraming, doff)
	case doff*4 > size:
		return Frame{}, fmt.Errorf("%w: doff %d points past the %d-byte frame", ErrFraming, doff, size)
	}
	rest := make([]byte, size-FrameHeaderSize)
	if _, err := io.ReadFull(r, rest); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, err
	}
	f.Body = rest[doff*4-FrameHeaderSize:]
	return f, nil
}

// AppendFrame appends a frame with doff 2 (no extended header) carrying body
// to b. It fails when the frame would exceed 4 GiB.
func AppendFrame(b []byte, typ uint8, channel uint16, body []byte) ([]byte, error) {
	size := uint64(FrameHeaderSize) + uint64(len(body))
	if size > 1<<32-1 {
		return nil, fmt.Errorf("%w: frame of %d bytes", ErrEncode, size)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(size))
	b = append(b, 2, typ)
	b = binary.BigEndian.AppendUint16(b, channel)
	return append(b, body...), nil
}

// WriteFrame writes one frame (see [AppendFrame]) to w in a single Write.
func WriteFrame(w io.Writer, typ uint8, channel uint16, body []byte) error {
	b, err := AppendFrame(make([]byte, 0, FrameHeaderSize+len(body)), typ, channel, body)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}
