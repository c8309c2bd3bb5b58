package line

import (
	"flag"
	"fmt"
	"strings"
	"testing"

	"duet/proto/internal/golden"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata from the current output")

// The golden file format is described in proto/internal/golden.

// TestGoldenInput runs client byte streams through Framer and Decode.
// Within a case each input line is one read from the socket; "reply"
// is what the server sends back to telnet after a call of Next.
func TestGoldenInput(t *testing.T) {
	var f Framer
	var pending []byte
	golden.Run(t, "testdata/input.txt", *update, func(setting string, input []byte) []string {
		if input == nil {
			if strings.HasPrefix(setting, "## ") {
				f, pending = Framer{}, nil
			} else if _, err := fmt.Sscanf(setting, "max %d", &f.Max); err != nil {
				t.Fatalf("unknown setting %q", setting)
			}
			return nil
		}
		pending = append(pending, input...)
		var out []string
		for {
			line, n, err := f.Next(pending)
			if r := f.Reply(); len(r) > 0 {
				out = append(out, fmt.Sprintf("reply %q", r))
			}
			switch {
			case err != nil:
				out = append(out, fmt.Sprintf("%s (dropped %d bytes)", err.Code, n))
			case line != nil:
				out = append(out, fmt.Sprintf("line %q => %s", line, golden.FormatCommand(Decode(line))))
			case n > 0:
				out = append(out, fmt.Sprintf("skip %d bytes", n))
			default:
				if len(pending) > 0 {
					out = append(out, fmt.Sprintf("wait (%d bytes pending)", len(pending)))
				}
				return out
			}
			pending = pending[n:]
		}
	})
}

// TestGoldenEvents renders events; each output line is one line on the
// wire, its "\r\n" left out.
func TestGoldenEvents(t *testing.T) {
	golden.Run(t, "testdata/events.txt", *update, func(setting string, input []byte) []string {
		if input == nil {
			return nil
		}
		out := string(AppendEvent(nil, golden.ParseEvent(t, input)))
		checkLines(t, out)
		if out == "" {
			return []string{"(nothing)"}
		}
		return strings.Split(strings.TrimSuffix(out, "\r\n"), "\r\n")
	})
}
