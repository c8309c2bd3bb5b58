package hub

import (
	"testing"

	"duet/proto"
)

// TestTokensToldApartByTheWhole: the index is keyed by half a token, but
// a token that shares that half with a user's, and differs in the rest,
// reaches nobody, and taking it out does not take the user's out.
func TestTokensToldApartByTheWhole(t *testing.T) {
	h := New(Options{})
	alice, err := h.Login([]byte("alice"), &recorder{})
	if err != nil {
		t.Fatal(err)
	}
	bob, err := h.Login([]byte("bob"), &recorder{})
	if err != nil {
		t.Fatal(err)
	}
	near := alice.Token()
	near[15] ^= 1 // the same first half
	if got := h.tokens.lookup(near); got != nil {
		t.Fatalf("a token that differs in its second half found %s", got.Name())
	}
	if err := bob.Connect([]byte(near.String())); err != proto.ErrUnknownToken {
		t.Fatalf("connect by the near token: %v, want unknown_token", err)
	}
	h.tokens.unfile(near, bob)
	h.tokens.unfile(alice.Token(), bob)
	if h.tokens.lookup(alice.Token()) != alice {
		t.Fatal("unfiling another session took alice's token out")
	}
	if err := bob.Connect([]byte(alice.Token().String())); err != nil {
		t.Fatalf("connect by alice's token: %v", err)
	}
}

// TestFreshTokensAvoidFiledHalves: a token drawn whose first half is
// filed already is drawn again, so the index never files two sessions
// under one key, and neither session loses its entry.
func TestFreshTokensAvoidFiledHalves(t *testing.T) {
	h := New(Options{})
	alice, err := h.Login([]byte("alice"), &recorder{})
	if err != nil {
		t.Fatal(err)
	}
	near := alice.Token()
	near[15] ^= 1
	var fresh proto.Token
	fresh[0] = 0x42
	draws := []proto.Token{near, alice.Token(), {}, fresh}
	h.newToken = func() proto.Token {
		d := draws[0]
		draws = draws[1:]
		return d
	}
	bob, err := h.Login([]byte("bob"), &recorder{})
	if err != nil {
		t.Fatal(err)
	}
	if bob.Token() != fresh || len(draws) != 0 {
		t.Fatalf("bob got %s with %d draws left, want %s after four draws", bob.Token(), len(draws), fresh)
	}
	if h.tokens.lookup(alice.Token()) != alice || h.tokens.lookup(fresh) != bob {
		t.Fatal("alice and bob are not both found by their tokens")
	}
}

// TestImportRefusesAFiledTokenHalf: a session taken up from another node
// keeps its token, so one whose token shares its first half with a
// session's here cannot be filed, and is refused as a token that is
// taken; the session here keeps its token.
func TestImportRefusesAFiledTokenHalf(t *testing.T) {
	h1, _, _ := clusterHub(t, resumeOpts())
	alice, _ := resumable(t, h1, "alice")
	alice.Detach(proto.ReasonDisconnected, 0)
	p := export(t, h1, "alice")
	h2, _, _ := clusterHub(t, resumeOpts())
	zed, _ := resumable(t, h2, "zed")
	near := zed.Token()
	near[15] ^= 1
	p.Token = near
	if err := h2.Import(p, nil); err != proto.ErrNameTaken {
		t.Fatalf("import with a token whose half is filed: %v, want name_taken", err)
	}
	if h2.tokens.lookup(zed.Token()) != zed.Session || h2.Stats().Users != 1 {
		t.Fatalf("zed lost its token, or the refused session stayed: %+v", h2.Stats())
	}
}
