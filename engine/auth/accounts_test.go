package auth_test

import (
	"errors"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"duet/engine/auth"
	"duet/engine/auth/authtest"
)

// The files here are written by the real htpasswd.

func TestLoadRealHtpasswd(t *testing.T) {
	path := authtest.Users(t, "alice", "s3cret", "Bob", "two words")
	a, err := auth.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if a.Len() != 2 {
		t.Fatalf("%d accounts", a.Len())
	}
	if name, ok := a.Verify([]byte("alice"), []byte("s3cret")); !ok || name != "alice" {
		t.Fatalf("alice: %q %v", name, ok)
	}
	if name, ok := a.Verify([]byte("bob"), []byte("two words")); !ok || name != "Bob" {
		t.Fatalf("bob: %q %v", name, ok)
	}
	if _, ok := a.Verify([]byte("alice"), []byte("s3cret ")); ok {
		t.Fatal("wrong password accepted")
	}
}

// TestLoadDefaultCost uses htpasswd -B exactly as the docs tell operators.
func TestLoadDefaultCost(t *testing.T) {
	path := t.TempDir() + "/users"
	authtest.RunExact(t, "-B", "-c", "-b", path, "alice", "s3cret")
	a, err := auth.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := a.Verify([]byte("alice"), []byte("s3cret")); !ok {
		t.Fatal("default-cost entry refused")
	}
}

func TestLoadRefusesWeakHashes(t *testing.T) {
	for _, tc := range []struct {
		flag, kind string
	}{
		{"-m", "MD5"},
		{"-d", "crypt"},
		{"-s", "SHA-1"},
		{"-p", "plain"},
	} {
		t.Run(tc.flag, func(t *testing.T) {
			path := authtest.Users(t, "alice", "s3cret")
			authtest.Run(t, tc.flag, path, "mallory", "pw")
			_, err := auth.Load(path)
			var le *auth.LineError
			if !errors.As(err, &le) {
				t.Fatalf("err = %v, want a LineError", err)
			}
			if le.Line != 2 || le.User != "mallory" || !strings.Contains(le.Msg, tc.kind) {
				t.Fatalf("err = %v", err)
			}
			if !strings.Contains(err.Error(), path+":2: user \"mallory\"") {
				t.Fatalf("message %q does not name file, line and user", err)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	if _, err := auth.Load(t.TempDir() + "/nope"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v", err)
	}
}

func TestReload(t *testing.T) {
	path := authtest.Users(t, "alice", "s3cret")
	a, err := auth.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	// A new user, added without -c, is picked up.
	authtest.Run(t, "-B", path, "bob", "hunter2")
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.Verify([]byte("bob"), []byte("hunter2")); !ok {
		t.Fatal("bob not picked up")
	}
	// A bad file keeps the old table, bob included.
	authtest.Run(t, "-m", path, "mallory", "pw")
	err = a.Reload()
	var le *auth.LineError
	if !errors.As(err, &le) || le.User != "mallory" {
		t.Fatalf("reload of a bad file: %v", err)
	}
	if _, ok := a.Verify([]byte("bob"), []byte("hunter2")); !ok || a.Len() != 2 {
		t.Fatal("old table lost")
	}
	// So does a file that vanished.
	os.Remove(path)
	if err := a.Reload(); err == nil {
		t.Fatal("reload of a missing file succeeded")
	}
	if _, ok := a.Verify([]byte("alice"), []byte("s3cret")); !ok {
		t.Fatal("old table lost")
	}
}

// TestReloadWhileVerifying swaps tables while logins run (go test -race).
func TestReloadWhileVerifying(t *testing.T) {
	path := authtest.Users(t, "alice", "s3cret")
	a, err := auth.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 50 {
			if _, ok := a.Verify([]byte("alice"), []byte("s3cret")); !ok {
				t.Error("alice refused during reload")
				return
			}
		}
	}()
	for range 20 {
		if err := a.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	<-done
}

// TestUnknownNamesTimeLikeAccounts performs the enumeration attack on a
// file that mixes bcrypt costs: it times logins under names that are not
// accounts and looks for accounts whose time no unknown name shares. Two
// accounts are at cost 4 and two at cost 7 (eight times as long):
// unknown names must take one time or the other, in about the file's
// proportions, and each always the same one, as an account does.
//
// Times are compared with each other, never with fixed durations, and
// load only ever adds time: the fastest of a few runs is the truest, and
// one run under the line between fast and slow proves a check fast. The
// fast and slow accounts themselves set that line.
func TestUnknownNamesTimeLikeAccounts(t *testing.T) {
	path := t.TempDir() + "/users"
	authtest.RunExact(t, "-B", "-C", "4", "-c", "-b", path, "fast1", "pw1")
	authtest.RunExact(t, "-B", "-C", "4", "-b", path, "fast2", "pw2")
	authtest.RunExact(t, "-B", "-C", "7", "-b", path, "slow1", "pw3")
	authtest.RunExact(t, "-B", "-C", "7", "-b", path, "slow2", "pw4")
	a, err := auth.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string) time.Duration {
		start := time.Now()
		if _, ok := a.Verify([]byte(name), []byte("wrong")); ok {
			t.Fatal("a wrong password matched")
		}
		return time.Since(start)
	}
	// runs is how many times a name may be timed before it is judged
	// slow: every run must be. Fewer under the race detector, where each
	// check costs thirty times as much.
	runs := 5
	if raceBuild {
		runs = 3
	}
	fastest := func(name string) time.Duration {
		best := check(name)
		for range runs - 1 {
			best = min(best, check(name))
		}
		return best
	}
	fast := max(fastest("fast1"), fastest("fast2"))
	slow := min(fastest("slow1"), fastest("slow2"))
	// Eightfold in a plain build; the race detector adds a cost of its
	// own to every check, which narrows the gap.
	if slow < 2*fast {
		t.Fatalf("cost 7 took %v and cost 4 %v: not the eightfold difference bcrypt should show", slow, fast)
	}
	// The geometric mean: as far, in ratio, from either.
	line := time.Duration(math.Sqrt(float64(fast) * float64(slow)))
	isSlow := func(name string) bool {
		for range runs {
			if check(name) < line {
				return false
			}
		}
		return true
	}

	// Half the accounts are slow, so about half the names should be. Of
	// 64, between 16 and 48 (four standard deviations); under the race
	// detector, of 16, at least one of each (all of one kind has a
	// chance of 1 in 32768). Drawing every unknown name at one cost, as a
	// single dummy hash does, gives none or all.
	names, lo, hi, again := 64, 16, 48, 8
	if raceBuild {
		names, lo, hi, again = 16, 1, 15, 4
	}
	slowNames := 0
	var firstSlow []bool
	for i := range names {
		s := isSlow("nobody" + strconv.Itoa(i))
		if s {
			slowNames++
		}
		firstSlow = append(firstSlow, s)
	}
	if slowNames < lo || slowNames > hi {
		t.Fatalf("%d of %d unknown names took as long as the cost-7 accounts, the rest as the cost-4 ones; "+
			"want about half, or the accounts of one cost can be told from names that do not exist", slowNames, names)
	}
	// Asked again, a name takes the same time: varying from one attempt
	// to the next would give unknown names away, since accounts do not.
	for i := range again {
		if isSlow("nobody"+strconv.Itoa(i)) != firstSlow[i] {
			t.Fatalf("unknown name %d changed from fast to slow or back between attempts", i)
		}
	}
	t.Logf("cost 4 %v, cost 7 %v; %d of %d unknown names slow", fast, slow, slowNames, names)
}

// TestLoadRefusesExcessiveCost: an entry of bcrypt cost 31 (which bcrypt
// allows, and which would keep a password checker busy for a day and a
// half per login) is refused at load and at reload, naming file, line
// and user; the cost of htpasswd -B -C 14 is still accepted.
func TestLoadRefusesExcessiveCost(t *testing.T) {
	path := authtest.Users(t, "alice", "s3cret")
	a, err := auth.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// A cost-31 hash cannot be made in a test's lifetime; alice's own
	// hash with its cost field raised is what the loader sees of one.
	_, hash, _ := strings.Cut(strings.TrimSpace(string(data)), ":")
	line := "mallory:" + hash[:4] + "31" + hash[6:] + "\n"
	if err := os.WriteFile(path, append(data, line...), 0o600); err != nil {
		t.Fatal(err)
	}
	want := path + `:2: user "mallory": bcrypt cost 31 is above 14, the most duet accepts`
	if _, err := auth.Load(path); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("load: %v, want %q", err, want)
	}
	if err := a.Reload(); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("reload: %v", err)
	}
	if _, ok := a.Verify([]byte("alice"), []byte("s3cret")); !ok {
		t.Fatal("old table lost")
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	authtest.RunExact(t, "-B", "-C", "14", "-b", path, "carol", "pw")
	if err := a.Reload(); err != nil {
		t.Fatalf("cost 14 refused: %v", err)
	}
	if a.Len() != 2 {
		t.Fatalf("%d accounts", a.Len())
	}
}
