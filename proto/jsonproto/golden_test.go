package jsonproto

import (
	"encoding/json"
	"flag"
	"testing"

	"duet/proto/internal/golden"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata from the current output")

// The golden file format is described in proto/internal/golden.

// TestGoldenDecode decodes client messages, one frame per input line.
func TestGoldenDecode(t *testing.T) {
	var d Decoder
	golden.Run(t, "testdata/decode.txt", *update, func(setting string, input []byte) []string {
		if input == nil {
			return nil
		}
		return []string{golden.FormatCommand(d.Decode(input))}
	})
}

// TestGoldenEvents renders events, one frame per output line.
func TestGoldenEvents(t *testing.T) {
	golden.Run(t, "testdata/events.txt", *update, func(setting string, input []byte) []string {
		if input == nil {
			return nil
		}
		out := AppendEvent(nil, golden.ParseEvent(t, input))
		if len(out) == 0 {
			return []string{"(nothing)"}
		}
		if !json.Valid(out) {
			t.Errorf("event %s: output is not JSON: %s", input, out)
		}
		return []string{string(out)}
	})
}
