package e2e

import (
	"encoding/base64"
	"encoding/hex"
	"os"
	"regexp"
	"strings"
	"testing"
)

func readSpec(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("../../docs/E2E.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestDocErrors keeps the error table in docs/E2E.md the list in Errors:
// every code, once, with whether it is fatal.
func TestDocErrors(t *testing.T) {
	doc := readSpec(t)
	rows := regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\| (yes|no) \\|").FindAllStringSubmatch(doc, -1)
	documented := map[string]bool{}
	for _, r := range rows {
		if _, dup := documented[r[1]]; dup {
			t.Errorf("E2E.md lists %s twice", r[1])
		}
		documented[r[1]] = r[2] == "yes"
	}
	for _, e := range Errors {
		fatal, ok := documented[e.Code]
		switch {
		case !ok:
			t.Errorf("E2E.md does not list %s", e.Code)
		case fatal != e.Fatal:
			t.Errorf("E2E.md says %s is fatal: %v; it is %v", e.Code, fatal, e.Fatal)
		}
		delete(documented, e.Code)
	}
	for code := range documented {
		t.Errorf("E2E.md lists %s, which is not an error", code)
	}
}

// TestDocVector keeps the test vector in docs/E2E.md the first of
// testdata/vectors.json, value for value.
func TestDocVector(t *testing.T) {
	doc := readSpec(t)
	v := readVectors(t).Vectors[0]
	for name, value := range map[string]string{
		"token": v.Token, "initiator_name": v.InitiatorName, "responder_name": v.ResponderName,
		"link_secret": v.LinkSecret, "initiator_private": v.InitiatorPrivate, "initiator_nonce": v.InitiatorNonce,
		"responder_private": v.ResponderPrivate, "responder_nonce": v.ResponderNonce,
		"initiator_public": v.InitiatorPublic, "responder_public": v.ResponderPublic, "link_id": v.LinkID,
		"initiator_hello": v.InitiatorHello, "commit": v.Commit, "responder_hello": v.ResponderHello,
		"transcript": v.Transcript, "shared": v.Shared, "salt": v.Salt,
		"key_i2r": v.KeyI2R, "key_r2i": v.KeyR2I, "key_confirm": v.KeyConfirm,
		"initiator_confirm": v.InitiatorConfirm, "responder_confirm": v.ResponderConfirm, "code": v.Code,
	} {
		line := regexp.MustCompile(`(?m)^` + name + ` +` + regexp.QuoteMeta(value) + `$`)
		if !line.MatchString(doc) {
			t.Errorf("E2E.md does not show %s as %s", name, value)
		}
	}
	for _, m := range v.Messages {
		if !strings.Contains(doc, "  envelope "+m.Envelope+"\n  data     "+m.Data+"\n") {
			t.Errorf("E2E.md does not show the %s's message %d", m.From, m.Counter)
		}
	}
}

// TestDocLabels checks that every label the code uses is the one the
// document gives.
func TestDocLabels(t *testing.T) {
	doc := readSpec(t)
	for _, l := range []string{
		labelCommit, labelTranscript, labelLinkID, labelNoSecret, labelKeyI2R, labelKeyR2I,
		labelKeyConfirm, labelConfirm, labelCode, labelMessage,
	} {
		if !strings.Contains(doc, `"`+l+`"`) && !strings.Contains(doc, "`"+l+" ") && !strings.Contains(doc, "`"+l+"`") {
			t.Errorf("E2E.md does not give the label %q", l)
		}
	}
}

// TestProtocolTranscript keeps the sealed frames of docs/PROTOCOL.md's
// transcript the envelopes of the test vector, in base64url.
func TestProtocolTranscript(t *testing.T) {
	data, err := os.ReadFile("../../docs/PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	v := readVectors(t).Vectors[0]
	for name, hexEnv := range map[string]string{
		"commit": v.Commit, "responder_hello": v.ResponderHello, "initiator_hello": v.InitiatorHello,
		"initiator_confirm": v.InitiatorConfirm, "responder_confirm": v.ResponderConfirm,
	} {
		env, err := hex.DecodeString(hexEnv)
		if err != nil {
			t.Fatal(err)
		}
		want := `{"type":"seal","data":"` + base64.RawURLEncoding.EncodeToString(env) + `"}`
		if !strings.Contains(doc, "> "+want+"\n") {
			t.Errorf("PROTOCOL.md does not send the %s as %s", name, want)
		}
	}
	if first := v.Messages[0].Data; !strings.Contains(doc, `{"type":"seal","data":"`+first+`"}`) {
		t.Errorf("PROTOCOL.md does not seal the first message as %s", first)
	}
}

// TestDocReasons keeps the abort reasons in docs/E2E.md the list in
// Reasons: every one, with its byte and its name.
func TestDocReasons(t *testing.T) {
	doc := readSpec(t)
	// The bullet that gives them, to the next.
	_, item, ok := strings.Cut(doc, "\n- **reason** (abort):")
	if !ok {
		t.Fatal("E2E.md gives no abort reasons")
	}
	item, _, _ = strings.Cut(item, "\n- ")
	// A name has a '_' in it ("`0x00` is not a reason" names none).
	documented := map[string]string{}
	for _, m := range regexp.MustCompile("`0x([0-9a-f]{2})`\\s+([a-z]+_[a-z_]+)").FindAllStringSubmatch(item, -1) {
		documented[m[2]] = m[1]
	}
	for _, r := range Reasons {
		b, ok := documented[r.String()]
		switch {
		case !ok:
			t.Errorf("E2E.md does not list the reason %s", r)
		case b != hex.EncodeToString([]byte{byte(r)}):
			t.Errorf("E2E.md gives %s as 0x%s; it is %#02x", r, b, byte(r))
		}
		delete(documented, r.String())
	}
	for name := range documented {
		t.Errorf("E2E.md lists the reason %s, which is not one", name)
	}
}
