//go:build linux

package enginetest

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// netnsTest names, in a child's environment, the test it runs in a
// network namespace of its own (InOwnNetwork).
const netnsTest = "DUET_NETNS_TEST"

// InOwnNetwork runs test t again in a child process with a network
// namespace of its own, whose loopback is its only link, and reports
// whether the caller is that child. A test that changes the network
// (routes that make an address unreachable) does it there, where it
// can break nothing else the machine runs, tests in parallel included.
// In the child, loopback is up, and it returns true: the test goes on.
// In the parent it waits for the child, passes or fails with it, and
// returns false: the test has nothing more to do.
//
// The namespace needs root, or user namespaces for a user without it
// (then the child is root in a user namespace of its own, which may
// change its own network and nothing else). Where neither is to be had,
// the test is skipped, or fails under DUET_REQUIRE_TOOLS=1, as in CI;
// so is it without ip (iproute2), which the test uses to change routes.
func InOwnNetwork(t *testing.T) bool {
	t.Helper()
	ip := ToolPath(t, "ip")
	if os.Getenv(netnsTest) == t.Name() {
		if out, err := exec.Command(ip, "link", "set", "lo", "up").CombinedOutput(); err != nil {
			t.Fatalf("ip link set lo up: %v: %s", err, out)
		}
		return true
	}
	if strings.Contains(t.Name(), "/") {
		panic("InOwnNetwork runs a whole test, not a subtest: " + t.Name())
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+regexp.QuoteMeta(t.Name())+"$", "-test.count=1", "-test.v",
		"-test.timeout=2m")
	cmd.Env = append(os.Environ(), netnsTest+"="+t.Name())
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	if os.Geteuid() != 0 {
		cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWUSER
		cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}}
		cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}}
	}
	out, err := cmd.CombinedOutput()
	if cmd.Process == nil {
		MissingTool(t, "a network namespace of its own ("+err.Error()+")")
	}
	t.Logf("in a network namespace of its own:\n%s", out)
	if err == nil && strings.Contains(string(out), "--- SKIP: "+t.Name()) {
		t.Skip("skipped in its network namespace")
	}
	if err != nil {
		t.Fatalf("the test failed in its network namespace: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("the test did not pass in its network namespace")
	}
	return false
}
