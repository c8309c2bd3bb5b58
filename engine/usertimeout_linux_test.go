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
			srv, err := New(Options{TCPListen: "127.0.0.1:0", Hub: hub.New(hub.Options{}), Limits: config.Defaults().Limits, Resume: tc.resume, Loops: 1})
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
					ms, err := unix.GetsockoptInt(cn.c.Fd(), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
					if err != nil {
						ms = -1
					}
					got <- ms
				})
			}
			select {
			case ms := <-got:
				if time.Duration(ms)*time.Millisecond != tc.want {
					t.Fatalf("TCP_USER_TIMEOUT %d ms, want %v", ms, tc.want)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no connection on the server")
			}
		})
	}
}
