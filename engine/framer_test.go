package engine

import (
	"testing"
)

// TestIdleLineConnectionHoldsNoFramer: a line connection keeps a framer
// only while it holds part of a line or a telnet session; after a read
// of whole lines it gives the framer back to its loop, and the next read
// (its own or another connection's) takes that one again. What a framer
// holds survives from read to read.
func TestIdleLineConnectionHoldsNoFramer(t *testing.T) {
	sender, reader := benchPair(t, stageLine, stageLine)
	ls := sender.loop
	in := []byte("hello\n")
	if used := sender.readLines(in); used != len(in) || sender.line != nil || len(ls.framers) != 1 {
		t.Fatalf("after whole lines: used %d of %d, framer kept %v, %d spare", used, len(in), sender.line != nil, len(ls.framers))
	}
	spare := ls.framers[0]
	in = []byte("hi alice\n")
	if reader.readLines(in); reader.line != nil || len(ls.framers) != 1 || ls.framers[0] != spare {
		t.Fatal("the other connection's read did not take the loop's spare framer and give it back")
	}

	// Part of a line: the framer stays with the connection until the
	// line is whole, and the line is read as one.
	in = []byte("half a ")
	if used := sender.readLines(in); used != 0 || sender.line == nil || len(ls.framers) != 0 {
		t.Fatalf("part of a line: used %d, framer kept %v, %d spare", used, sender.line != nil, len(ls.framers))
	}
	drain(reader.out)
	in = []byte("half a line\n")
	if used := sender.readLines(in); used != len(in) || sender.line != nil {
		t.Fatalf("the rest of the line: used %d of %d, framer kept %v", used, len(in), sender.line != nil)
	}
	if b, _ := reader.out.Take(0); b == nil || string(b.B) != "<alice> half a line\r\n" {
		t.Fatalf("the reader got %v", b)
	}

	// A telnet client: its session is kept in the framer, for good.
	in = []byte("\xff\xfb\x01hello\n") // IAC WILL ECHO
	sender.readLines(in)
	if sender.line == nil {
		t.Fatal("a telnet client's framer was given back")
	}
}
