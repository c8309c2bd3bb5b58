package engine

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"duet/proto"
	"duet/proto/jsonproto"
	"duet/proto/line"
)

// TestEndingsTable: every ending has a row with a label of its own; a
// refusal is counted under its error's code; an ending that tells its
// client an error or a goodbye says so in some protocol.
func TestEndingsTable(t *testing.T) {
	seen := map[string]ending{}
	for e := endNone + 1; e < numEndings; e++ {
		info := &endings[e]
		if info.label == "" {
			t.Errorf("ending %d has no row", e)
			continue
		}
		if other, dup := seen[info.label]; dup {
			t.Errorf("endings %d and %d share the label %q", other, e, info.label)
		}
		seen[info.label] = e
		if info.refusal && (info.err == nil || info.err.Code != info.label) {
			t.Errorf("refusal %q is not labelled with its error's code", info.label)
		}
		if info.wsCode == 0 && info.wsText != "" || info.status == 0 && info.statusText != "" {
			t.Errorf("%q has a close reason or HTTP text without a code", info.label)
		}
		// A session sent away ends after all when resume is off, and
		// its partner must then be told why; a session that moved has
		// nothing to tell.
		if info.session == detachSession && info.partner == "" || info.session == sessionMoved && info.partner != "" {
			t.Errorf("%q: session fate %s with partner reason %q", info.label, fateNames[info.session], info.partner)
		}
		if int(info.session) >= len(fateNames) || fateNames[info.session] == "" {
			t.Errorf("%q: a session fate with no name", info.label)
		}
	}
	if endings[endNone].label != "" {
		t.Error("endNone, an open connection, has a row")
	}
}

// TestGoodbyeTellsTheNotSentCountFirst: an ending that says anything to
// its client, in either protocol, says first the count of refused says
// not told yet; one that says nothing (its client is gone, or is not
// reading) tells no count either.
func TestGoodbyeTellsTheNotSentCountFirst(t *testing.T) {
	count := proto.Event{Kind: proto.EvNotice, Text: []byte("3 more lines were not sent: you are not connected to anyone"),
		Err: proto.ErrNotPaired, FirstID: 4, ID: 6}
	for e := endNone + 1; e < numEndings; e++ {
		for _, st := range []stage{stageLine, stageWS} {
			enc := line.AppendEvent
			if st == stageWS {
				enc = webEncoder{}.AppendEvent
			}
			bye := goodbye(nil, e, st, endDetail{})
			got := goodbye(nil, e, st, endDetail{notSent: count})
			var want []byte
			if len(bye) > 0 {
				want = append(enc(nil, &count), bye...)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s at stage %d: %q, want %q", endings[e].label, st, got, want)
			}
		}
	}
}

// endingCells renders an ending's row of the table in docs/LIMITS.md as
// the Go table has it, every column but the description.
func endingCells(info *endingInfo) []string {
	told := []string{}
	if info.err != nil {
		told = append(told, "`"+info.err.Code+"` error")
	}
	if info.notice != "" {
		told = append(told, "a notice")
	}
	if info.last != 0 {
		told = append(told, "`"+info.last.String()+"`")
	}
	cells := []string{"`" + info.label + "`", orDash(strings.Join(told, ", then "))}
	ws := ""
	if info.wsCode != 0 {
		ws = strconv.Itoa(int(info.wsCode))
		if info.wsText != "" {
			ws += " `" + info.wsText + "`"
		}
	}
	http := ""
	if info.status != 0 {
		http = strconv.Itoa(info.status)
	}
	closes := "at once"
	if info.drain {
		closes = "once written"
	}
	partner, session := "—", "—"
	if info.partner != "" {
		partner = "`" + string(info.partner) + "`"
	}
	if info.partner != "" || info.session != endSession {
		session = fateNames[info.session]
	}
	return append(cells, orDash(ws), orDash(http), closes, partner, session)
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// TestLimitsDocListsEveryEnding holds the table of endings in
// docs/LIMITS.md to the Go table: one row per ending, in any order, each
// cell as the Go table says. A cell may add a note after what the Go
// table says (the codes a protocol error may carry instead, say), set off
// by a space, a comma or a semicolon.
func TestLimitsDocListsEveryEnding(t *testing.T) {
	data, err := os.ReadFile("../docs/LIMITS.md")
	if err != nil {
		t.Fatal(err)
	}
	const heading = "## Every way a connection ends"
	doc := string(data)
	start := strings.Index(doc, heading)
	if start < 0 {
		t.Fatalf("docs/LIMITS.md has no section %q", heading)
	}
	section := doc[start+len(heading):]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	const columns = 8 // reason, when, told, WebSocket, HTTP, closes, partner, session
	rows := map[string][]string{}
	for line := range strings.SplitSeq(section, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if len(cells) != columns {
			t.Errorf("row with %d cells, want %d: %s", len(cells), columns, line)
			continue
		}
		if _, dup := rows[cells[0]]; dup {
			t.Errorf("two rows for %s", cells[0])
		}
		rows[cells[0]] = cells
	}
	for e := endNone + 1; e < numEndings; e++ {
		want := endingCells(&endings[e])
		got, ok := rows[want[0]]
		if !ok {
			t.Errorf("docs/LIMITS.md has no row for ending %s", want[0])
			continue
		}
		delete(rows, want[0])
		got = append(got[:1:1], got[2:]...) // the description is the doc's own
		for i := range want {
			if !saysAtLeast(got[i], want[i]) {
				t.Errorf("ending %s: %q in the doc, the code says %q", want[0], got[i], want[i])
			}
		}
	}
	for label := range rows {
		t.Errorf("docs/LIMITS.md has a row for %s, which is no ending", label)
	}
}

// saysAtLeast reports whether cell says want, perhaps with a note after.
func saysAtLeast(cell, want string) bool {
	if !strings.HasPrefix(cell, want) {
		return false
	}
	rest := cell[len(want):]
	return rest == "" || strings.ContainsRune(" ,;", rune(rest[0]))
}

// TestOperationsDocNamesEveryLabel: the metrics table in
// docs/OPERATIONS.md names every label of duet_disconnects_total, the
// refusals in the row of duet_connections_rejected_total, which it
// refers to, and every reason of duet_pairings_ended_total.
func TestOperationsDocNamesEveryLabel(t *testing.T) {
	data, err := os.ReadFile("../docs/OPERATIONS.md")
	if err != nil {
		t.Fatal(err)
	}
	row := func(metric string) string {
		for line := range strings.SplitSeq(string(data), "\n") {
			if strings.HasPrefix(line, "| `"+metric+"{reason}` |") {
				return line
			}
		}
		t.Fatalf("docs/OPERATIONS.md has no row for %s", metric)
		return ""
	}
	disconnects, rejected := row("duet_disconnects_total"), row("duet_connections_rejected_total")
	for e := endNone + 1; e < numEndings; e++ {
		info := &endings[e]
		in := disconnects
		if info.refusal {
			in = rejected
		}
		if !strings.Contains(in, "`"+info.label+"`") {
			t.Errorf("docs/OPERATIONS.md does not name %s among the labels", info.label)
		}
	}
	ended := row("duet_pairings_ended_total")
	for _, r := range proto.Reasons {
		if !strings.Contains(ended, "`"+string(r)+"`") {
			t.Errorf("docs/OPERATIONS.md does not name %s among the reasons a pairing ends", r)
		}
	}
}

// TestProtocolDocShowsResumeEndings keeps the lines the engine itself
// writes for session resume in docs/PROTOCOL.md's transcripts as it
// writes them: what a connection whose session was resumed elsewhere is
// told, in each protocol, and the count of says refused while the
// partner is away.
func TestProtocolDocShowsResumeEndings(t *testing.T) {
	data, err := os.ReadFile("../docs/PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	var want []string
	for l := range strings.SplitSeq(string(goodbye(nil, endResumed, stageLine, endDetail{})), "\r\n") {
		if l != "" {
			want = append(want, l)
		}
	}
	info := &endings[endResumed]
	want = append(want,
		string(jsonproto.AppendEvent(nil, &proto.Event{Kind: proto.EvNotice, Text: []byte(info.notice)})),
		string(jsonproto.AppendEvent(nil, &proto.Event{Kind: info.last})),
		"* 2 more lines were"+notSentWhy[refusedAwayFull])
	for _, l := range want {
		if !strings.Contains(doc, "< "+l+"\n") {
			t.Errorf("docs/PROTOCOL.md has no transcript line %q", l)
		}
	}
	if !strings.Contains(doc, fmt.Sprintf("(close frame, status %d, %q)", info.wsCode, info.wsText)) {
		t.Errorf("docs/PROTOCOL.md does not show the close frame %d %q", info.wsCode, info.wsText)
	}

	// A drain, as the transcript has it: the key of its example, 2m.
	const key = "7f3xw9q2m8vd4kc6h0n1prt5jb"
	drain := &endings[endDrain]
	lineBye := goodbye(nil, endDrain, stageLine, endDetail{notice: drainNoticeText(true, key, 2*time.Minute)})
	jsonNotice := jsonproto.AppendEvent(nil, &proto.Event{Kind: proto.EvNotice, Text: []byte(drainNoticeText(false, key, 2*time.Minute))})
	for _, l := range []string{strings.TrimSuffix(string(lineBye), "\r\n"), string(jsonNotice)} {
		if !strings.Contains(doc, "< "+l+"\n") {
			t.Errorf("docs/PROTOCOL.md has no transcript line %q", l)
		}
	}
	if !strings.Contains(doc, fmt.Sprintf("(close frame, status %d, %q)", drain.wsCode, drain.wsText)) {
		t.Errorf("docs/PROTOCOL.md does not show the close frame %d %q", drain.wsCode, drain.wsText)
	}

	// A session a drain could not park.
	unparked := &endings[endNotParked]
	want = want[:0]
	for l := range strings.SplitSeq(string(goodbye(nil, endNotParked, stageLine, endDetail{})), "\r\n") {
		if l != "" {
			want = append(want, l)
		}
	}
	want = append(want,
		string(jsonproto.AppendEvent(nil, &proto.Event{Kind: proto.EvError, Err: unparked.err})),
		string(jsonproto.AppendEvent(nil, &proto.Event{Kind: unparked.last})))
	for _, l := range want {
		if !strings.Contains(doc, "< "+l+"\n") {
			t.Errorf("docs/PROTOCOL.md has no transcript line %q", l)
		}
	}
}

// TestNeedsSocketError: the socket's pending error is looked up only
// when gnet closed a connection without reading (a bare io.EOF, or no
// error), the one case where it decides between closed and lost, and
// tells a timeout (which may be a slow reader) on any stage; what
// wentAway answers otherwise is the same whatever the socket holds.
func TestNeedsSocketError(t *testing.T) {
	readEOF := os.NewSyscallError("read", io.EOF)
	reset := os.NewSyscallError("read", syscall.ECONNRESET)
	for _, tc := range []struct {
		st   stage
		err  error
		want bool
	}{
		{stageLine, io.EOF, true},
		{stageLine, nil, true},
		{stageHTTP, io.EOF, true},
		{stageLine, readEOF, false},
		{stageLine, reset, false},
		{stageLine, os.NewSyscallError("write", syscall.EPIPE), false},
		{stageWS, io.EOF, true},
		{stageWS, nil, true},
		{stageWS, os.NewSyscallError("write", syscall.ETIMEDOUT), false},
	} {
		if got := needsSocketError(tc.err); got != tc.want {
			t.Errorf("needsSocketError(%v) = %v, want %v", tc.err, got, tc.want)
		}
		if !tc.want {
			// Spared the look, the answer is the one any pending error
			// would have given; but for a read that returned end of
			// input, which is the client closing whatever came after.
			with, without := wentAway(tc.st, false, tc.err, syscall.ECONNRESET), wentAway(tc.st, false, tc.err, nil)
			if with != without && !(tc.err == readEOF && without == endClosed) {
				t.Errorf("stage %d, %v: %v with a pending error, %v without", tc.st, tc.err, with, without)
			}
		}
	}
}

// TestPeerGone: every failure gnet or the socket reports, but an end of
// input, is the peer gone, and all but a reset (and a write after one)
// the kernel giving up on it, which may have been a reader that stopped
// reading. Linux reports its timeout as the soft error it holds when it
// gives up: no route to host for a link that went down, and whatever an
// ICMP error said. Before, only ECONNRESET, ETIMEDOUT and EPIPE were
// the peer gone, and only ETIMEDOUT the kernel giving up. A line
// connection through a trusted proxy is lost however it ends: the
// proxy ends its input for a reset too.
func TestPeerGone(t *testing.T) {
	read := func(e error) error { return os.NewSyscallError("read", e) }
	for _, tc := range []struct {
		err, sockErr    error
		gone, gaveUp    bool
		line, websocket ending
	}{
		{read(io.EOF), nil, false, false, endClosed, endLost},
		{io.EOF, nil, false, false, endClosed, endLost},
		{nil, nil, false, false, endClosed, endLost},
		{read(syscall.ECONNRESET), nil, true, false, endLost, endLost},
		{os.NewSyscallError("write", syscall.EPIPE), nil, true, false, endLost, endLost},
		{io.EOF, syscall.ECONNRESET, true, false, endLost, endLost},
		{read(syscall.ETIMEDOUT), nil, true, true, endLost, endLost},
		{io.EOF, syscall.ETIMEDOUT, true, true, endLost, endLost},
		{read(syscall.EHOSTUNREACH), nil, true, true, endLost, endLost},
		{os.NewSyscallError("write", syscall.EHOSTUNREACH), nil, true, true, endLost, endLost},
		{io.EOF, syscall.EHOSTUNREACH, true, true, endLost, endLost},
		{nil, syscall.ENETUNREACH, true, true, endLost, endLost},
		{read(syscall.EHOSTDOWN), nil, true, true, endLost, endLost},
		{read(syscall.ENETDOWN), nil, true, true, endLost, endLost},
		{read(syscall.ECONNREFUSED), nil, true, true, endLost, endLost},
		{read(syscall.EPROTO), nil, true, true, endLost, endLost},
		{read(syscall.ENOPROTOOPT), nil, true, true, endLost, endLost},
	} {
		if got := peerGone(tc.err, tc.sockErr); got != tc.gone {
			t.Errorf("peerGone(%v, %v) = %v, want %v", tc.err, tc.sockErr, got, tc.gone)
		}
		if got := timedOut(tc.err, tc.sockErr); got != tc.gaveUp {
			t.Errorf("timedOut(%v, %v) = %v, want %v", tc.err, tc.sockErr, got, tc.gaveUp)
		}
		for _, w := range []struct {
			name    string
			st      stage
			proxied bool
			want    ending
		}{
			{"line", stageLine, false, tc.line},
			{"line via proxy", stageLine, true, endLost},
			// No session before an upgrade: an HTTP connection's end is
			// counted as it was.
			{"http via proxy", stageHTTP, true, tc.line},
			{"websocket", stageWS, false, tc.websocket},
			{"websocket via proxy", stageWS, true, tc.websocket},
		} {
			if got := wentAway(w.st, w.proxied, tc.err, tc.sockErr); got != w.want {
				t.Errorf("wentAway(%s, %v, %v) = %s, want %s", w.name, tc.err, tc.sockErr, endings[got].label, endings[w.want].label)
			}
		}
	}
}
