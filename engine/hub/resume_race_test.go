package hub

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"duet/proto"
)

// raceClient is a JSON client as TestResumeConcurrentRace drives it: it
// reads what its connection is handed, names the last message it read
// when it resumes, and checks that it reads every message its partner
// got through, once, in order, numbered one after the other.
type raceClient struct {
	name, partner string
	s             *Session
	box           *recorder
	key           string
	lastSeq       uint64 // the last message number read
	next          int    // the partner's next message expected
	sent          int    // messages of its own the hub took
	refused       int    // peer_away_full answers
	resumes       int
	missed        int
	zombie        bool // the resume under way takes over an attached session
}

// read checks what the connection was handed, in order.
func (c *raceClient) read(t *testing.T, evs []proto.Event) {
	t.Helper()
	for _, ev := range evs {
		switch ev.Kind {
		case proto.EvMessage:
			want := fmt.Sprintf("%s:%d", c.partner, c.next)
			if ev.Seq != c.lastSeq+1 || string(ev.Text) != want || ev.From != c.partner {
				t.Errorf("%s read %q from %s numbered %d; want %q numbered %d", c.name, ev.Text, ev.From, ev.Seq, want, c.lastSeq+1)
				return
			}
			c.lastSeq, c.next = ev.Seq, c.next+1
		case proto.EvResumed:
			// After a drop the client read all it was handed, and what
			// is kept covers the rest. A zombie's last deliveries go
			// unread, and if the client is slow to resume, the oldest
			// of those may be dropped for room: the resume says exactly
			// how many, and the messages after them follow.
			if ev.Missed != 0 && !c.zombie || ev.Peer != c.partner || ev.ResumeKey == "" {
				t.Errorf("%s resumed %+v", c.name, ev)
			}
			c.key = ev.ResumeKey
			c.lastSeq += uint64(ev.Missed)
			c.next += ev.Missed
			c.missed += ev.Missed
		case proto.EvReplayEnd, proto.EvPeerAway, proto.EvPeerBack:
		default:
			t.Errorf("%s was handed %+v", c.name, ev)
		}
	}
}

// resume takes the session to a new connection, after the connection
// dropped (detach) or while the old one still carries it (a zombie,
// whose last deliveries the client never reads).
func (c *raceClient) resume(t *testing.T, h *Hub, detach bool) {
	if detach {
		c.s.Detach(proto.ReasonDisconnected, 0)
	}
	c.read(t, c.box.take())
	box := &recorder{}
	c.zombie = !detach
	defer func() { c.zombie = false }()
	res, err := h.Resume([]byte(c.key), c.lastSeq, true, box)
	if err != nil {
		t.Errorf("%s: resume: %v", c.name, err)
		return
	}
	if (res.Zombie == nil) != detach {
		t.Errorf("%s: resume after detach %v found a zombie %v", c.name, detach, res.Zombie)
	}
	c.s, c.box = res.Session, box
	c.resumes++
	c.read(t, box.take())
}

// TestResumeConcurrentRace has many pairs talk while their sessions go
// away and come back, are taken over while attached, acknowledge what
// they read, and the hub sweeps and counts, all at once, under -race.
// Every message a sender got through reaches its partner exactly once,
// in order, numbered without a gap, whatever the resumes in between.
func TestResumeConcurrentRace(t *testing.T) {
	const pairs, rounds = 12, 300
	opts := resumeOpts()
	opts.ResumeBuffer = 8 << 10
	h := New(opts)
	clients := make([]*raceClient, 2*pairs)
	for i := range pairs {
		a, b := fmt.Sprint("a", i), fmt.Sprint("b", i)
		ua, ka := resumable(t, h, a)
		ub, kb := resumable(t, h, b)
		pair(t, ua, ub)
		clients[2*i] = &raceClient{name: a, partner: b, s: ua.Session, box: ua.box, key: ka}
		clients[2*i+1] = &raceClient{name: b, partner: a, s: ub.Session, box: ub.box, key: kb}
	}

	var done atomic.Bool
	var janitor sync.WaitGroup
	janitor.Add(1)
	go func() {
		defer janitor.Done()
		for !done.Load() {
			h.sweep()
			_ = h.Stats()
			runtime.Gosched()
		}
	}()

	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			for range rounds {
				run := make([][]byte, 1+rng.IntN(3))
				for j := range run {
					run[j] = fmt.Appendf(nil, "%s:%d", c.name, c.sent+j)
				}
				for len(run) > 0 {
					_, n, err := c.s.SayAll(run, nil)
					c.sent += n
					run = run[n:]
					if err != nil {
						if err.Code != "peer_away_full" {
							t.Errorf("%s: say: %v", c.name, err)
							return
						}
						c.refused++
						runtime.Gosched()
					}
				}
				c.read(t, c.box.take())
				switch rng.IntN(10) {
				case 0:
					c.resume(t, h, true)
				case 1:
					c.resume(t, h, false)
				case 2, 3, 4:
					c.s.Ack(c.lastSeq)
				case 5:
					// Stay away a while, so that the partner fills
					// what is kept.
					c.s.Detach(proto.ReasonDisconnected, 0)
					for range 300 {
						runtime.Gosched()
					}
					c.resume(t, h, true)
				}
				if t.Failed() {
					return
				}
			}
		}()
	}
	wg.Wait()
	done.Store(true)
	janitor.Wait()

	refused, resumes, missed := 0, 0, 0
	for i, c := range clients {
		c.read(t, c.box.take())
		if partner := clients[i^1]; c.next != partner.sent {
			t.Errorf("%s read %d of %s's %d messages", c.name, c.next, partner.name, partner.sent)
		}
		refused += c.refused
		resumes += c.resumes
		missed += c.missed
	}
	st := h.Stats()
	if st.Away != 0 || st.Users != 2*pairs || st.Pairs != pairs || st.ResumedAway+st.ResumedZombie != uint64(resumes) {
		t.Fatalf("stats %+v after %d resumes", st, resumes)
	}
	t.Logf("%d resumes, %d messages refused while away, %d missed by zombies", resumes, refused, missed)
}
