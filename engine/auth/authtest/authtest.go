// Package authtest makes htpasswd files for tests with the real
// htpasswd tool (Debian: apt-get install apache2-utils), so the tests
// read exactly what operators' files hold.
package authtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Tool returns the path of htpasswd. Without it the test is skipped,
// or fails when DUET_REQUIRE_TOOLS=1 (as in CI, where a skip would hide
// a gap).
func Tool(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("htpasswd")
	if err != nil {
		if os.Getenv("DUET_REQUIRE_TOOLS") == "1" {
			t.Fatal("htpasswd not found and DUET_REQUIRE_TOOLS=1: apt-get install apache2-utils")
		}
		t.Skip("htpasswd not found (apt-get install apache2-utils); skipping")
	}
	return path
}

// Run runs htpasswd with args, adding -b and -C 4 (the cheapest bcrypt
// cost, so tests stay quick) when bcrypt is asked for with -B; it fails
// the test on error.
func Run(t testing.TB, args ...string) {
	t.Helper()
	tool := Tool(t)
	full := []string{"-b"}
	for _, a := range args {
		if a == "-B" {
			full = append(full, "-C", "4")
		}
	}
	full = append(full, args...)
	out, err := exec.Command(tool, full...).CombinedOutput()
	if err != nil {
		t.Fatalf("htpasswd %v: %v\n%s", args, err, out)
	}
}

// Users writes a new bcrypt htpasswd file in a temporary directory with
// the given name/password pairs, as `htpasswd -B` would (the first with
// -c), and returns its path.
func Users(t testing.TB, namePassword ...string) string {
	t.Helper()
	if len(namePassword)%2 != 0 {
		t.Fatal("authtest.Users: odd number of arguments")
	}
	path := filepath.Join(t.TempDir(), "users")
	if len(namePassword) == 0 {
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	for i := 0; i < len(namePassword); i += 2 {
		args := []string{"-B"}
		if i == 0 {
			args = append(args, "-c")
		}
		Run(t, append(args, path, namePassword[i], namePassword[i+1])...)
	}
	return path
}

// RunExact runs htpasswd with exactly args (no -b or -C added).
func RunExact(t testing.TB, args ...string) {
	t.Helper()
	out, err := exec.Command(Tool(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("htpasswd %v: %v\n%s", args, err, out)
	}
}
