package engine_test

import (
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"

	"duet/engine"
	"duet/engine/hub"
)

// TestStartBusyAddress: an address another socket holds is reported as
// a *ListenError naming its key and the address, and saying it is in use,
// for either listener; nothing is left listening.
func TestStartBusyAddress(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	busy := taken.Addr().String()
	for _, tc := range []struct{ key, tcp, ws string }{
		{"tcp.listen", busy, "127.0.0.1:0"},
		{"ws.listen", "127.0.0.1:0", busy},
	} {
		srv, err := engine.New(engine.Options{TCPListen: tc.tcp, WSListen: tc.ws, Hub: hub.New(hub.Options{})})
		if err != nil {
			t.Fatal(err)
		}
		err = srv.Start()
		var le *engine.ListenError
		if !errors.As(err, &le) || le.Key != tc.key || le.Addr != busy || !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("%s busy: Start = %v, want a ListenError for %s", tc.key, err, busy)
		}
		want := "cannot listen on " + busy + " (" + tc.key + "): address already in use"
		if !strings.HasPrefix(err.Error(), want) {
			t.Errorf("error %q, want it to start %q", err, want)
		}
		if srv.TCPAddr() != nil || srv.WSAddr() != nil {
			t.Errorf("%s busy: still bound %v %v", tc.key, srv.TCPAddr(), srv.WSAddr())
		}
	}
}
