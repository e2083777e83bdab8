package eventhubs

import (
	"encoding/json"
	"reflect"
	"testing"
)

// TestAppendStoredEvent: the hand encoder writes what encoding/json
// writes for storedEvent, keys with quotes and control characters included.
func TestAppendStoredEvent(t *testing.T) {
	for _, se := range []storedEvent{
		{Offset: 0, Time: 1, Msg: []byte{0, 1, 2, 0xff}},
		{Offset: 1 << 40, Time: -5, Key: "k\"\\\n\u2028é", Msg: nil},
		{Offset: 7, Time: 1700000000000000000, Key: "device-1", Msg: []byte("hello")},
	} {
		got := appendStoredEvent(nil, se.Offset, se.Time, se.Key, se.Msg)
		var back storedEvent
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("%s: %v", got, err)
		}
		if len(back.Msg) == 0 {
			back.Msg = nil
		}
		if len(se.Msg) == 0 {
			se.Msg = nil
		}
		if !reflect.DeepEqual(back, se) {
			t.Fatalf("%s decodes to %+v, want %+v", got, back, se)
		}
	}
}
