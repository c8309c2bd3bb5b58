//go:build linux

package engine

import (
	"bufio"
	"context"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"duet/config"
	"duet/engine/hub"
)

// TestUserTimeoutFollowsReplayRecent: with resume on, every connection
// gets TCP_USER_TIMEOUT = resume.replay_recent, so a peer that stops
// acknowledging what is written to it is found dead within the time a
// line client's resume replays; with resume off the kernel's default is
// left alone.
func TestUserTimeoutFollowsReplayRecent(t *testing.T) {
	for _, tc := range []struct {
		name   string
		resume config.Resume
		want   time.Duration
	}{
		{"resume on", config.Resume{Window: 2 * time.Minute, ReplayRecent: 20 * time.Second}, 20 * time.Second},
		{"resume off", config.Resume{}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t, Options{TCPListen: "127.0.0.1:0", Resume: tc.resume})
			if got := openedUserTimeout(t, srv); got != tc.want {
				t.Fatalf("TCP_USER_TIMEOUT %v, want %v", got, tc.want)
			}
		})
	}
}

// TestUserTimeoutFollowsReload: the listeners hold the TCP_USER_TIMEOUT
// their connections inherit, and a reload of the resume section sets it
// again: each connection opened after it has the new value, and with
// resume turned off the kernel's default (0).
func TestUserTimeoutFollowsReload(t *testing.T) {
	srv := startServer(t, Options{TCPListen: "127.0.0.1:0", WSListen: "127.0.0.1:0",
		Resume: config.Resume{Window: 2 * time.Minute, ReplayRecent: 20 * time.Second}})
	if got := openedUserTimeout(t, srv); got != 20*time.Second {
		t.Fatalf("before the reload: TCP_USER_TIMEOUT %v, want 20s", got)
	}
	for _, l := range []net.Addr{srv.TCPAddr(), srv.WSAddr()} {
		if got := listenerUserTimeout(t, srv, l); got != 20*time.Second {
			t.Fatalf("listener %v: TCP_USER_TIMEOUT %v, want 20s", l, got)
		}
	}
	srv.SetResume(config.Resume{Window: 2 * time.Minute, ReplayRecent: 7 * time.Second})
	if got := openedUserTimeout(t, srv); got != 7*time.Second {
		t.Fatalf("after replay_recent 7s: TCP_USER_TIMEOUT %v, want 7s", got)
	}
	if got := listenerUserTimeout(t, srv, srv.WSAddr()); got != 7*time.Second {
		t.Fatalf("web listener after replay_recent 7s: TCP_USER_TIMEOUT %v, want 7s", got)
	}
	srv.SetResume(config.Resume{})
	if got := openedUserTimeout(t, srv); got != 0 {
		t.Fatalf("after resume off: TCP_USER_TIMEOUT %v, want 0 (the kernel's default)", got)
	}
}

// startServer starts a Server of opts, with a hub, the default limits
// and one loop, and shuts it down when the test ends.
func startServer(t *testing.T, opts Options) *Server {
	t.Helper()
	opts.Hub, opts.Limits, opts.Loops = hub.New(hub.Options{}), config.Defaults().Limits, 1
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return srv
}

// openedUserTimeout opens a line connection to srv and returns the
// TCP_USER_TIMEOUT of the server's end of it.
func openedUserTimeout(t *testing.T, srv *Server) time.Duration {
	t.Helper()
	c, err := net.DialTimeout("tcp", srv.TCPAddr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
		t.Fatal(err) // the greeting: the connection is open on the server
	}
	got := make(chan int, 1)
	for _, ls := range srv.loopList() {
		_ = ls.eachConn(func(cn *conn) {
			if cn.c.RemoteAddr().String() != c.LocalAddr().String() {
				return
			}
			ms, err := unix.GetsockoptInt(cn.c.Fd(), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
			if err != nil {
				ms = -1
			}
			got <- ms
		})
	}
	select {
	case ms := <-got:
		return time.Duration(ms) * time.Millisecond
	case <-time.After(5 * time.Second):
		t.Fatal("the connection is not on the server")
		return 0
	}
}

// listenerUserTimeout returns the TCP_USER_TIMEOUT of srv's listener at
// addr.
func listenerUserTimeout(t *testing.T, srv *Server, addr net.Addr) time.Duration {
	t.Helper()
	fd, err := srv.eng.DupListener("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ms, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
	if err != nil {
		t.Fatal(err)
	}
	return time.Duration(ms) * time.Millisecond
}
