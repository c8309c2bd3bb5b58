package enginetest

import (
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The real clients and servers the tests drive (nc, telnet, nginx,
// redis-server) are Debian's, installed by scripts/deps.sh. A test that
// needs one that is missing is skipped, or fails under
// DUET_REQUIRE_TOOLS=1, as in CI, where a skip would hide a gap.

// MissingTool skips the test, or fails it under DUET_REQUIRE_TOOLS=1,
// for want of what.
func MissingTool(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("DUET_REQUIRE_TOOLS") == "1" {
		t.Fatalf("%s is missing and DUET_REQUIRE_TOOLS=1 (scripts/deps.sh installs it)", what)
	}
	t.Skipf("%s is missing (scripts/deps.sh installs it); set DUET_REQUIRE_TOOLS=1 to fail instead", what)
}

// ToolPath is where the program name is, on the PATH; without it the
// test is skipped (MissingTool).
func ToolPath(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		MissingTool(t, name)
	}
	return path
}

// PipeNetcat runs the real netcat binary against addr, its input from
// in, with -N (the connection's sending side shut at the end of the
// input, as a user piping a file gives it), its output to out. The
// function it returns waits for nc to finish, killing it after Timeout.
func PipeNetcat(t testing.TB, addr string, in io.Reader, out io.Writer) (finished func()) {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	cmd := exec.Command(ToolPath(t, "nc"), "-N", host, port)
	cmd.Stdin, cmd.Stdout = in, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	return func() {
		t.Helper()
		select {
		case <-done:
		case <-time.After(Timeout):
			_ = cmd.Process.Kill()
			t.Fatal("nc did not finish")
		}
	}
}
