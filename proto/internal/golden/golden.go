// Package golden runs the codecs' golden transcripts: the file format and
// its checking, shared by proto/line and proto/jsonproto tests.
package golden

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"duet/proto"
)

// A golden file is a transcript: input lines, each followed by the output
// it produces. The format, line by line:
//
//	# comment            kept as is
//	## title             starts a new case (state, such as a Framer, resets)
//	max N                a setting for the case
//	< text               input, as written (no leading or trailing blanks, no control characters)
//	<q "text"            input, Go-quoted
//	> text               expected output, as written
//	>q "text"            expected output, Go-quoted
//
// Output lines are what the test checks, and what -update rewrites.

// Handler is called for each setting line (input == nil) and each
// input line of a golden file, and returns the output lines.
type Handler func(setting string, input []byte) []string

// Run checks the golden file at path against handle, and rewrites it
// from the current output when update is set (the tests' -update flag).
func Run(t *testing.T, path string, update bool, handle Handler) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	var want, got []string
	inputLine := 0
	flush := func() {
		for i := range max(len(want), len(got)) {
			var w, g string
			if i < len(want) {
				w = want[i]
			}
			if i < len(got) {
				g = got[i]
			}
			if w != g {
				t.Errorf("%s:%d: output %d:\n got  %s\n want %s", path, inputLine, i+1, g, w)
			}
		}
		want, got = nil, nil
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	for n, l := range lines {
		switch {
		case strings.HasPrefix(l, ">"):
			want = append(want, l)
			continue
		case strings.HasPrefix(l, "<"):
			flush()
			inputLine = n + 1
			input, err := parseText(strings.TrimPrefix(l, "<"))
			if err != nil {
				t.Fatalf("%s:%d: %v", path, n+1, err)
			}
			out.WriteString(l + "\n")
			for _, o := range handle("", input) {
				got = append(got, formatText(">", []byte(o)))
				out.WriteString(got[len(got)-1] + "\n")
			}
		case l == "" || strings.HasPrefix(l, "# ") || l == "#":
			flush()
			out.WriteString(l + "\n")
		default:
			flush()
			handle(l, nil)
			out.WriteString(l + "\n")
		}
	}
	flush()
	if update {
		t.Logf("rewriting %s", path)
		if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// parseText reads what follows '<' or '>': " text" or "q \"quoted\"".
func parseText(s string) ([]byte, error) {
	switch {
	case strings.HasPrefix(s, "q "):
		u, err := strconv.Unquote(s[2:])
		return []byte(u), err
	case strings.HasPrefix(s, " "):
		return []byte(s[1:]), nil
	case s == "":
		return []byte{}, nil
	}
	return nil, fmt.Errorf("malformed golden line %q", s)
}

// formatText writes b after mark as is when that is unambiguous,
// and Go-quoted otherwise.
func formatText(mark string, b []byte) string {
	plain := len(b) > 0 && utf8.Valid(b) && b[0] != ' ' && b[len(b)-1] != ' '
	for _, r := range string(b) {
		plain = plain && r >= 0x20 && r != 0x7f && !(r >= 0x80 && r <= 0x9f)
	}
	if plain {
		return mark + " " + string(b)
	}
	return mark + "q " + strconv.Quote(string(b))
}

// eventSpec is how golden files write an Event: JSON, with the fields'
// lowercase names, the token in hex and the error by its code.
type eventSpec struct {
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Token     string `json:"token"`
	Peer      string `json:"peer"`
	From      string `json:"from"`
	Text      string `json:"text"`
	Initiator bool   `json:"initiator"`
	Joined    bool   `json:"joined_away"`
	NewToken  bool   `json:"newtoken"`
	Reason    string `json:"reason"`
	Count     int    `json:"count"`
	Err       string `json:"err"`
	Auth      string `json:"auth"`
	MaxText   int    `json:"max_text"`
	Seq       uint64 `json:"seq"`
	ResumeKey string `json:"resume_key"`
	Window    string `json:"window"` // a time.Duration, as "2m"
	Missed    int    `json:"missed"`
	PeerAway  bool   `json:"peer_away"`
	PeerProto string `json:"peer_proto"` // "line", "json" or ""
	PairID    uint64 `json:"pair_id"`
	ID        uint64 `json:"id"`
	FirstID   uint64 `json:"first_id"`
}

// ParseEvent reads an Event written as golden files write it.
func ParseEvent(t *testing.T, spec []byte) *proto.Event {
	t.Helper()
	var s eventSpec
	dec := json.NewDecoder(bytes.NewReader(spec))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		t.Fatalf("event %s: %v", spec, err)
	}
	ev := &proto.Event{
		Name: s.Name, Peer: s.Peer, From: s.From, Initiator: s.Initiator, JoinedAway: s.Joined, NewToken: s.NewToken, PeerAway: s.PeerAway,
		Reason: proto.Reason(s.Reason), Count: s.Count, Auth: s.Auth, MaxText: s.MaxText,
		Seq: s.Seq, ResumeKey: s.ResumeKey, Missed: s.Missed, PairID: s.PairID,
		ID: s.ID, FirstID: s.FirstID,
	}
	switch s.PeerProto {
	case "line":
		ev.PeerProto = proto.ProtoLine
	case "json":
		ev.PeerProto = proto.ProtoJSON
	case "":
	default:
		t.Fatalf("event %s: unknown peer_proto", spec)
	}
	if s.Window != "" {
		w, err := time.ParseDuration(s.Window)
		if err != nil {
			t.Fatalf("event %s: %v", spec, err)
		}
		ev.Window = w
	}
	if s.Text != "" {
		ev.Text = []byte(s.Text)
	}
	for k := proto.EvNone; k.String() != "unknown"; k++ {
		if k.String() == s.Kind {
			ev.Kind = k
		}
	}
	if ev.Kind == proto.EvNone && s.Kind != "none" {
		t.Fatalf("event %s: unknown kind", spec)
	}
	if s.Token != "" {
		if _, err := hex.Decode(ev.Token[:], []byte(s.Token)); err != nil {
			t.Fatalf("event %s: %v", spec, err)
		}
	}
	if s.Err != "" {
		for _, e := range proto.Errors {
			if e.Code == s.Err && ev.Err == nil { // the first error with the code is its usual text
				ev.Err = e
			}
		}
		if ev.Err == nil {
			t.Fatalf("event %s: unknown error code", spec)
		}
	}
	return ev
}

// FormatCommand renders a decoding result on one line, for tables and
// golden files: the op, then the fields that op carries, quoted.
func FormatCommand(cmd proto.Command, err *proto.Error) string {
	if err != nil {
		if cmd.ID != 0 {
			// A say or seal refused names its id.
			return "error " + err.Code + " id=" + strconv.FormatUint(cmd.ID, 10)
		}
		return "error " + err.Code
	}
	var b strings.Builder
	b.WriteString(cmd.Op.String())
	switch cmd.Op {
	case proto.OpLogin:
		fmt.Fprintf(&b, " name=%q", cmd.Name)
		if len(cmd.Password) > 0 {
			fmt.Fprintf(&b, " password=%q", cmd.Password)
		}
	case proto.OpConnect:
		fmt.Fprintf(&b, " token=%q", cmd.Token)
	case proto.OpSay:
		fmt.Fprintf(&b, " text=%q", cmd.Text)
	case proto.OpSeal:
		fmt.Fprintf(&b, " data=%q", cmd.Text)
	}
	if cmd.ID != 0 {
		fmt.Fprintf(&b, " id=%d", cmd.ID)
	}
	switch cmd.Op {
	case proto.OpResume:
		fmt.Fprintf(&b, " key=%q last=%d", cmd.Key, cmd.Last)
	case proto.OpAck:
		fmt.Fprintf(&b, " last=%d", cmd.Last)
	}
	return b.String()
}
