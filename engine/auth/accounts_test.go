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
// Times are compared with each other, never with fixed durations: each
// name is timed between a fast account and a slow one, in rounds, and
// is called slow when its fastest time is nearer, in ratio, the slow
// accounts' fastest than the fast ones'. Load only ever adds time, and
// it weighs on all three alike within a round.
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
	// A name is timed in rounds until its place between the two is clear
	// (in the nearer quarter, in ratio), or the rounds run out. Fewer
	// under the race detector, where each check costs thirty times as
	// much.
	maxRounds := 8
	if raceBuild {
		maxRounds = 3
	}
	var fastest, slowest time.Duration // over the whole test, for the log
	isSlow := func(name string) bool {
		f, n, s := time.Hour, time.Hour, time.Hour
		var place float64 // 0: as fast as the fast accounts; 1: as slow as the slow ones
		for i := range maxRounds {
			f = min(f, check([]string{"fast1", "fast2"}[i%2]))
			n = min(n, check(name))
			s = min(s, check([]string{"slow1", "slow2"}[i%2]))
			place = math.Log(float64(n)/float64(f)) / math.Log(float64(s)/float64(f))
			if i >= 1 && (place < 0.25 || place > 0.75) {
				break
			}
		}
		fastest, slowest = max(fastest, f), max(slowest, s)
		return place > 0.5
	}
	for _, name := range []string{"fast1", "fast2"} {
		if isSlow(name) {
			t.Fatalf("the cost-4 account %s timed as slow", name)
		}
	}
	for _, name := range []string{"slow1", "slow2"} {
		if !isSlow(name) {
			t.Fatalf("the cost-7 account %s timed as fast", name)
		}
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
	t.Logf("cost 4 at most %v, cost 7 at most %v; %d of %d unknown names slow", fastest, slowest, slowNames, names)
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
