package main

import (
	"encoding/json"
	"strings"
	"testing"

	"duet/cmd/duet-bench/internal/gorelay"
)

func TestRunCommand(t *testing.T) {
	s, err := gorelay.Listen(gorelay.Config{LineAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	addr := s.LineAddr().String()

	var out, errOut strings.Builder
	code := mainExit([]string{"run", "-tcp", addr, "-pairs", "3", "-messages", "50", "-json"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, out.String(), errOut.String())
	}
	var rep struct {
		Relay struct {
			Sent, Delivered int64
		}
	}
	if err := json.Unmarshal([]byte(out.String()), &rep); err != nil {
		t.Fatalf("%v in %q", err, out.String())
	}
	if rep.Relay.Sent != 300 || rep.Relay.Delivered != 300 {
		t.Fatalf("relay %+v", rep.Relay)
	}

	out.Reset()
	code = mainExit([]string{"run", "-client", "plain", "-tcp", addr, "-pairs", "3", "-messages", "50", "-json"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("plain client: exit %d: %s%s", code, out.String(), errOut.String())
	}
	var plain struct {
		Client string
		Relay  struct{ Sent, Delivered int64 }
	}
	if err := json.Unmarshal([]byte(out.String()), &plain); err != nil {
		t.Fatalf("%v in %q", err, out.String())
	}
	if plain.Client != "plain" || plain.Relay.Sent != 300 || plain.Relay.Delivered != 300 {
		t.Fatalf("plain client's report %+v", plain)
	}

	out.Reset()
	if code := mainExit([]string{"run", "-tcp", addr, "-pairs", "1", "-messages", "10"}, &out, &errOut); code != 0 {
		t.Fatalf("table run: exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "result      OK") {
		t.Fatalf("table:\n%s", out.String())
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"fly"},
		{"run", "-proto", "udp"},
		{"run", "-client", "fancy"},
		{"run", "-tcp", "192.0.2.1:7070"},
		{"run", "-sources", "127.0.0.1,10.1.1.1"},
		{"run", "-size", "3"},
		{"run", "extra"},
		{"run", "-nosuchflag"},
	} {
		var out, errOut strings.Builder
		if code := mainExit(args, &out, &errOut); code != 2 {
			t.Errorf("%q: exit %d, want 2 (%s)", args, code, errOut.String())
		}
	}
}
