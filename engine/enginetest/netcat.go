package enginetest

import (
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// NetcatPath is where the real nc is. It skips the test where nc is
// not installed, unless DUET_REQUIRE_TOOLS=1, which makes that a
// failure.
func NetcatPath(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("nc")
	if err != nil {
		if os.Getenv("DUET_REQUIRE_TOOLS") == "1" {
			t.Fatal("nc not installed and DUET_REQUIRE_TOOLS=1 (apt-get install netcat-openbsd)")
		}
		t.Skip("nc not installed (apt-get install netcat-openbsd); set DUET_REQUIRE_TOOLS=1 to fail instead")
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
	cmd := exec.Command(NetcatPath(t), "-N", host, port)
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
