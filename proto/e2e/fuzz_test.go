package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"testing"
)

// addEnvelopeSeeds adds every envelope of the decode table and of the
// test vectors.
func addEnvelopeSeeds(f *testing.F) {
	for _, tt := range decodeTests {
		if len(tt.in) <= 1024 {
			f.Add(tt.in)
		}
	}
	for _, v := range readVectors(f).Vectors {
		for _, s := range []string{v.Commit, v.InitiatorHello, v.ResponderHello, v.InitiatorConfirm, v.ResponderConfirm} {
			b, _ := hex.DecodeString(s)
			f.Add(b)
		}
		for _, m := range v.Messages {
			b, _ := hex.DecodeString(m.Envelope)
			f.Add(b)
		}
	}
}

// FuzzDecode checks that Decode never panics, refuses only with its two
// errors, and that what it accepts encodes back to the same bytes (the
// version of an abort aside): one envelope has one encoding, so a
// receiver's comparison of handshake steps by their bytes is sound.
func FuzzDecode(f *testing.F) {
	addEnvelopeSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Decode(b)
		if err != nil {
			if err != ErrBadEnvelope && err != ErrBadVersion {
				t.Fatalf("error %v", err)
			}
			return
		}
		want := bytes.Clone(b)
		want[0] = Version
		if got := e.Append(nil); !bytes.Equal(got, want) {
			t.Fatalf("%x re-encodes as %x", b, got)
		}
		if e.Kind == KindMessage && (e.Counter >= MaxCounter || len(e.Sealed) < TagSize+1) {
			t.Fatalf("accepted message %+v", e)
		}
	})
}

// FuzzDecodeData checks that only canonical base64url is accepted: what
// decodes encodes back to the same string.
func FuzzDecodeData(f *testing.F) {
	for _, s := range []string{"AQUC", "AQ", "AR", "AQ==", "AQ\nUC", "__-_", "//+/", ""} {
		f.Add(s)
	}
	for _, v := range readVectors(f).Vectors {
		for _, m := range v.Messages {
			f.Add(m.Data)
		}
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := DecodeData(s)
		if err != nil {
			if err != ErrBadEnvelope {
				t.Fatalf("error %v", err)
			}
			return
		}
		if EncodeData(b) != s {
			t.Fatalf("%q decodes to %x, which encodes as %q", s, b, EncodeData(b))
		}
		if ref, err := base64.RawURLEncoding.DecodeString(s); err != nil || !bytes.Equal(ref, b) {
			t.Fatalf("%q: package base64 says %x, %v", s, ref, err)
		}
	})
}

// FuzzReceive feeds arbitrary envelopes to both sides of a confirmed
// pairing. Nothing may panic; a non-fatal refusal leaves the session as
// it was, able to exchange messages; a fatal one leaves it failed with an
// abort to send.
func FuzzReceive(f *testing.F) {
	addEnvelopeSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		ini, res := handshake(t, testSecret(1), testSecret(1))
		for _, s := range []*Session{ini, res} {
			before := s.State()
			r, err := s.Receive(b)
			switch e := err.(type) {
			case nil:
				if r.Kind == KindMessage && r.Text == "" {
					t.Fatal("an empty message accepted")
				}
			case *Error:
				if e.Fatal || e == ErrPeerAborted {
					if s.State() != StateFailed {
						t.Fatalf("fatal %v leaves %v", e, s.State())
					}
					if e != ErrPeerAborted && (len(r.Out) != 1 || kindOf(r.Out[0]) != KindAbort) {
						t.Fatalf("fatal %v without an abort: %x", e, r.Out)
					}
					continue
				}
				if s.State() != before {
					t.Fatalf("non-fatal %v changed %v to %v", e, before, s.State())
				}
			default:
				t.Fatalf("error of type %T: %v", err, err)
			}
		}
		if ini.State() == StateConfirmed && res.State() == StateConfirmed {
			talk(t, ini, res, "still talking")
		}
	})
}
