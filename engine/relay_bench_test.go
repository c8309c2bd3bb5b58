package engine

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"

	"duet/config"
	"duet/engine/hub"
	"duet/engine/outbox"
	"duet/proto/wsframe"
)

// These benchmarks time duet's own work per relayed message — decode the
// sender's bytes, route through the pairing core, encode for the reader —
// without sockets, so that what they measure is the code, not the kernel.
// The whole-server figures come from cmd/duet-bench (docs/BENCHMARKS.md).

// idleLoop is a gnet.EventLoop that runs nothing: a flush the outbox asks
// for is done by the benchmark itself, as the real loop would do it.
type idleLoop struct{}

func (idleLoop) Register(context.Context, net.Addr) (<-chan gnet.RegisteredResult, error) {
	return nil, nil
}
func (idleLoop) Enroll(context.Context, net.Conn) (<-chan gnet.RegisteredResult, error) {
	return nil, nil
}
func (idleLoop) Execute(context.Context, gnet.Runnable) error                 { return nil }
func (idleLoop) Schedule(context.Context, gnet.Runnable, time.Duration) error { return nil }
func (idleLoop) Close(gnet.Conn) error                                        { return nil }

// benchPair returns two logged-in, paired connections of the given stages
// that share one loop, with no sockets behind them.
func benchPair(b testing.TB, senderStage, readerStage stage) (sender, reader *conn) {
	// Resume is on, as it is by default: every message is numbered and
	// kept for the reader's resume.
	srv, err := New(Options{TCPListen: "127.0.0.1:0", Hub: hub.New(hub.Options{}), Limits: config.Defaults().Limits, Resume: config.Defaults().Resume})
	if err != nil {
		b.Fatal(err)
	}
	ls := newLoopState(srv, idleLoop{}, -1)
	mk := func(name string, st stage) *conn {
		cn := &conn{loop: ls, c: socketless{}, stage: st}
		cn.out = cn.newOutbox(st == stageLine)
		if st == stageWS {
			cn.ws = &wsState{r: wsframe.Reader{MaxMessage: srv.lim().MaxFrame}}
		}
		s, perr := srv.hub.Login([]byte(name), cn.out)
		if perr != nil {
			b.Fatal(perr)
		}
		cn.sess = s
		return cn
	}
	sender, reader = mk("alice", senderStage), mk("bob", readerStage)
	if err := sender.sess.Connect([]byte(reader.sess.Token().String())); err != nil {
		b.Fatal(err)
	}
	return sender, reader
}

// socketless is the gnet.Conn of a benchmark's connection: it has no
// descriptor, so the outbox's look at what TCP acknowledged (Unacked)
// finds nothing to tell, and the reader keeps what it is sent as a
// client that acknowledges does.
type socketless struct{ gnet.Conn }

func (socketless) Fd() int { return -1 }

// drain does what a flush does with the reader's queue, minus the write.
func drain(o *outbox.Outbox) {
	if buf, _ := o.Take(0); buf != nil {
		outbox.Release(buf)
	}
	o.Settle(0)
}

// drainLoop does what the loop's flush of its pending list does, minus
// the writes: it drains each connection queued for a flush and empties
// the list, which no loop runs here to empty.
func drainLoop(ls *loopState) { ls.eachPending(func(cn *conn) { drain(cn.out) }) }

const benchText = "a 64-byte chat message, the size the relay benchmarks all use.."

// BenchmarkRelayTCPOnePerRead is a read that holds one message, as with
// one message in flight: what duet does per read, besides per message,
// including the look at what the client's TCP acknowledged that follows
// every read (conn.onTraffic).
func BenchmarkRelayTCPOnePerRead(b *testing.B) {
	sender, reader := benchPair(b, stageLine, stageLine)
	input := []byte(benchText + "\n")
	work := make([]byte, len(input))
	drainLoop(reader.loop)
	b.SetBytes(int64(len(input)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		copy(work, input)
		sender.out.SetInline(true)
		if used := sender.readLines(work); used != len(work) {
			b.Fatalf("used %d of %d", used, len(work))
		}
		sender.out.SetInline(false)
		drainLoop(reader.loop)
		if seq, looked := sender.out.LookAcked(hub.ReadStride); looked {
			sender.sess.Received(seq)
		}
	}
}

func BenchmarkRelayTCPToTCP(b *testing.B) {
	sender, reader := benchPair(b, stageLine, stageLine)
	input := []byte(benchText + "\n")
	batch := bytes.Repeat(input, 64)
	work := make([]byte, len(batch))
	drainLoop(reader.loop)
	b.SetBytes(int64(len(input)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += 64 {
		copy(work, batch) // the framer edits its input in place, as gnet's buffer allows
		if used := sender.readLines(work); used != len(work) {
			b.Fatalf("used %d of %d", used, len(work))
		}
		drainLoop(reader.loop)
	}
}

func BenchmarkRelayWSToWS(b *testing.B) {
	sender, reader := benchPair(b, stageWS, stageWS)
	var frame bytes.Buffer
	payload := []byte(`{"type":"say","text":"` + benchText + `"}`)
	mask := ws.NewMask()
	masked := append([]byte(nil), payload...)
	ws.Cipher(masked, mask, 0)
	if err := ws.WriteHeader(&frame, ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Mask: mask, Length: int64(len(payload))}); err != nil {
		b.Fatal(err)
	}
	frame.Write(masked)
	batch := bytes.Repeat(frame.Bytes(), 64)
	work := make([]byte, len(batch))
	drainLoop(reader.loop)
	b.SetBytes(int64(frame.Len()))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += 64 {
		copy(work, batch) // frames are unmasked in place
		if used := sender.readWeb(work); used != len(work) {
			b.Fatalf("used %d of %d", used, len(work))
		}
		drainLoop(reader.loop)
	}
}

// TestRelayBenchPathDelivers keeps the benchmarks honest: the path they
// time really delivers the message to the reader, encoded for it.
func TestRelayBenchPathDelivers(t *testing.T) {
	for _, c := range []struct {
		name         string
		in, out      stage
		input, wants string
	}{
		{"tcp", stageLine, stageLine, benchText + "\n", "<alice> " + benchText + "\r\n"},
		{"ws-to-tcp", stageWS, stageLine, "", "<alice> " + benchText + "\r\n"},
		{"tcp-to-ws", stageLine, stageWS, benchText + "\n", `{"type":"message","from":"alice","text":"` + benchText + `","seq":1}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			sender, reader := benchPair(t, c.in, c.out)
			drain(reader.out)
			if c.in == stageLine {
				sender.readLines([]byte(c.input))
			} else {
				var frame bytes.Buffer
				payload := []byte(`{"type":"say","text":"` + benchText + `"}`)
				_ = ws.WriteHeader(&frame, ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Length: int64(len(payload))})
				frame.Write(payload) // zero mask: the payload is its own masked form
				sender.readWeb(frame.Bytes())
			}
			buf, msgs := reader.out.Take(0)
			if buf == nil || msgs != 1 || !strings.Contains(string(buf.B), c.wants) {
				t.Fatalf("reader got %q (%d messages)", bufString(buf), msgs)
			}
		})
	}
}

func bufString(b *outbox.Batch) string {
	if b == nil {
		return ""
	}
	return string(b.B)
}
