package line

import (
	"os"
	"strings"
	"testing"

	"duet/proto"
)

// TestProtocolDocIsComplete keeps docs/PROTOCOL.md in step with proto:
// every error code, peer_left reason and event type must be documented,
// along with the help text exactly as sent.
func TestProtocolDocIsComplete(t *testing.T) {
	data, err := os.ReadFile("../../docs/PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	for _, e := range proto.Errors {
		if !strings.Contains(doc, "| `"+e.Code+"` | "+e.Text+" |") {
			t.Errorf("docs/PROTOCOL.md has no row for error %s with its current text", e.Code)
		}
	}
	reasons := []proto.Reason{
		proto.ReasonLeft, proto.ReasonDisconnected, proto.ReasonShutdown, proto.ReasonSlow,
		proto.ReasonTimeout, proto.ReasonReplaced, proto.ReasonLinkLost,
	}
	for _, r := range reasons {
		if !strings.Contains(doc, "| `"+string(r)+"` |") {
			t.Errorf("docs/PROTOCOL.md has no row for reason %s", r)
		}
	}
	for k := proto.EvHello; k <= proto.EvNotice; k++ {
		if !strings.Contains(doc, `{"type":"`+k.String()+`"`) {
			t.Errorf("docs/PROTOCOL.md shows no %s event", k)
		}
	}
	help := strings.ReplaceAll(helpText, "\r\n", "\n")
	if !strings.Contains(doc, help) {
		t.Errorf("docs/PROTOCOL.md does not show the help text as sent")
	}
}
