package enginetest

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a throwaway redis-server on a loopback port, with no
// persistence, so a restart forgets everything as a crashed Redis would.
type Redis struct {
	t    testing.TB
	Port string
	// Password is the default user's (requirepass), "" for none; a
	// restart keeps it.
	Password string
	cmd      *exec.Cmd
}

// StartRedis starts a redis-server and stops it when the test ends. It
// skips the test when redis-server is not installed, unless
// DUET_REQUIRE_REDIS=1, which makes that a failure.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	return StartRedisAuth(t, "")
}

// StartRedisAuth is StartRedis with the default user's password set to
// password (requirepass), so that a client must give it.
func StartRedisAuth(t testing.TB, password string) *Redis {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("DUET_REQUIRE_REDIS") == "1" {
			t.Fatal("redis-server not found and DUET_REQUIRE_REDIS=1")
		}
		t.Skip("redis-server not installed; cluster tests skipped (scripts/deps.sh installs it)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	r := &Redis{t: t, Port: port, Password: password}
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

// URL is the server's redis:// URL.
func (r *Redis) URL() string { return "redis://127.0.0.1:" + r.Port }

// Addr is the server's host:port.
func (r *Redis) Addr() string { return "127.0.0.1:" + r.Port }

// Start starts the server (again) on its port and waits until it answers.
func (r *Redis) Start() {
	r.t.Helper()
	args := []string{"--port", r.Port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning"}
	if r.Password != "" {
		args = append(args, "--requirepass", r.Password)
	}
	r.cmd = exec.Command("redis-server", args...)
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: r.Addr(), Password: r.Password})
	defer c.Close()
	deadline := time.Now().Add(Timeout)
	for c.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			r.t.Fatal("redis-server did not come up")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Pause stops the server's process (SIGSTOP) where it is: its
// connections stay open and nothing is answered, as with a Redis that
// hangs, until Continue.
func (r *Redis) Pause() {
	r.t.Helper()
	if err := r.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		r.t.Fatal(err)
	}
}

// Continue lets a paused server run again.
func (r *Redis) Continue() {
	r.t.Helper()
	if err := r.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		r.t.Fatal(err)
	}
}

// Stop kills the server outright, as a crash would.
func (r *Redis) Stop() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}
