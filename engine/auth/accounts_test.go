package auth_test

import (
	"errors"
	"os"
	"strings"
	"testing"

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
