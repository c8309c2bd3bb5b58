package engine

import (
	"bytes"
	"testing"

	"github.com/gobwas/ws"
)

// The relay benchmarks across protocols: a netcat user talking with a
// browser, each way. They time the same path as BenchmarkRelayTCPToTCP
// and BenchmarkRelayWSToWS, with the sender's decoder and the reader's
// encoder of different protocols.

func BenchmarkRelayTCPToWS(b *testing.B) {
	input := []byte(benchText + "\n")
	benchmarkRelay(b, stageLine, stageWS, input)
}

func BenchmarkRelayWSToTCP(b *testing.B) {
	benchmarkRelay(b, stageWS, stageLine, maskedSay(b))
}

// benchmarkRelay relays input, one message as the sender's protocol
// carries it, 64 at a time, from a sender of stage from to a reader of
// stage to.
func benchmarkRelay(b *testing.B, from, to stage, input []byte) {
	sender, reader := benchPair(b, from, to)
	read := sender.readLines
	if from != stageLine {
		read = sender.readWeb
	}
	batch := bytes.Repeat(input, 64)
	work := make([]byte, len(batch))
	drainLoop(reader.loop)
	b.SetBytes(int64(len(input)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += 64 {
		copy(work, batch) // decoding edits its input in place
		if used := read(work); used != len(work) {
			b.Fatalf("used %d of %d", used, len(work))
		}
		drainLoop(reader.loop)
	}
}

// maskedSay is the frame a browser sends for benchText.
func maskedSay(b *testing.B) []byte {
	var frame bytes.Buffer
	payload := []byte(`{"type":"say","text":"` + benchText + `"}`)
	mask := ws.NewMask()
	masked := append([]byte(nil), payload...)
	ws.Cipher(masked, mask, 0)
	if err := ws.WriteHeader(&frame, ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Mask: mask, Length: int64(len(payload))}); err != nil {
		b.Fatal(err)
	}
	frame.Write(masked)
	return frame.Bytes()
}
