package jsonproto

import (
	"os"
	"strings"
	"testing"
)

// TestProtocolDocShowsHelp keeps the help text in docs/PROTOCOL.md the
// one the server sends. proto/line checks the rest of the document.
func TestProtocolDocShowsHelp(t *testing.T) {
	data, err := os.ReadFile("../../docs/PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "```\n"+helpText+"\n```") {
		t.Errorf("docs/PROTOCOL.md does not show the JSON help text as sent")
	}
}
