//go:build linux

package engine_test

import (
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"duet/engine"
	"duet/engine/enginetest"
)

// TestUnreachablePeerCountsWhatItsTCPNeverAcknowledged is
// TestDeadPeerCountsWhatItsTCPNeverAcknowledged with a network that
// says it failed: after bob's TCP goes silent, the route to his address
// goes too, as when his link goes down or the neighbour that leads to
// him stops answering. The kernel's retransmissions to him then fail
// with no route to host, and when the user timeout passes it aborts the
// connection with that error (EHOSTUNREACH) rather than ETIMEDOUT. He
// is as gone as a peer that timed out: what his TCP never acknowledged
// never reaches him. If his session's window runs out, alice is told
// that all of it was not delivered; if he resumes, all of it is
// replayed. Before, only a reset or ETIMEDOUT counted so: alice was
// told none were lost, and a resume replayed only those sent in the
// last resume.replay_recent before the drop, none here, and said
// nothing of the rest.
//
// The route is changed in a network namespace of the test's own.
func TestUnreachablePeerCountsWhatItsTCPNeverAcknowledged(t *testing.T) {
	t.Parallel()
	if !enginetest.InOwnNetwork(t) {
		return
	}
	const unread = 50
	pad := strings.Repeat("x", 100) // past the stride at which the server looks
	for _, tc := range []struct {
		name string
		// bob's address, of his own: it alone is made unreachable.
		addr  string
		after func(t *testing.T, d *enginetest.Daemon, alice *enginetest.LineClient, key string)
	}{
		{"the window runs out", "127.0.0.2", func(t *testing.T, _ *enginetest.Daemon, alice *enginetest.LineClient, _ string) {
			alice.Expect(fmt.Sprintf(`^\* bob timed out; %d of your messages were not delivered; you are free to be joined again$`, unread))
		}},
		{"bob resumes", "127.0.0.3", func(t *testing.T, d *enginetest.Daemon, _ *enginetest.LineClient, key string) {
			_, peer, replayed, missed := enginetest.ResumeLine(t, d, key)
			if peer != "alice" || missed != 0 {
				t.Fatalf("resumed with %q, %d missed; want alice, 0", peer, missed)
			}
			var want []string
			for i := 1; i <= unread; i++ {
				want = append(want, fmt.Sprint("<alice> m", i, " ", pad))
			}
			if got := strings.Join(replayed, "\n"); got != strings.Join(want, "\n") {
				t.Fatalf("replayed %d messages:\n%s\nwant m1 to m%d", len(replayed), got, unread)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := enginetest.Start(t, func(o *engine.Options) {
				o.Limits.SlowTimeout = time.Minute
				o.Resume.ReplayRecent = userTimeout
				o.Resume.Window = 3 * time.Second
			})
			alice := d.DialLine(t).Login("alice")
			bob := newLineConn(t, dialFrom(t, tc.addr, d.TCP))
			bob.expect(`^\* welcome`)
			bob.send("/login bob")
			bob.expect(`^\* you are bob`)
			key := regexp.MustCompile(`^\* resume key: (\w+) `).FindStringSubmatch(bob.expect(`^\* resume key: `))[1]
			bob.send("/connect " + alice.Token)
			bob.expect(`^\* you are connected with alice$`)
			alice.Expect(`^\* bob is connected$`)

			deafen(t, bob.c)
			for i := 1; i <= unread; i++ {
				alice.Send(fmt.Sprint("m", i, " ", pad))
			}
			// The answer to alice's own command says the server has read
			// all she sent before it, and written it to bob's socket.
			alice.Send("/who")
			alice.Expect(`^\* you are alice, `)
			ip := enginetest.ToolPath(t, "ip")
			if out, err := exec.Command(ip, "route", "add", "unreachable", tc.addr+"/32", "table", "local").CombinedOutput(); err != nil {
				t.Fatalf("ip route add: %v: %s", err, out)
			}
			alice.Expect(`^\* bob lost the connection; waiting up to 3s for bob to come back$`)
			tc.after(t, d, alice, key)
		})
	}
}
