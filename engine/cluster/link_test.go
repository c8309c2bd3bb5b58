package cluster

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"duet/engine/enginetest"
	"duet/engine/hub"
)

// TestCannotLinkSaysWhy: a node that cannot link to Redis says why, at
// warn, once for each reason rather than at every retry, and never
// with the Redis password. Here Redis is reachable but the URL's
// password is wrong, then Redis is gone, then the password is made the
// one the node gives, and it links. (Before, the node logged "cannot
// reach Redis" once at start with no error at all, and nothing at any
// level as it retried.)
func TestCannotLinkSaysWhy(t *testing.T) {
	const right, wrong = "RightPW123456", "WrongPWzzzz99"
	r := enginetest.StartRedisAuth(t, right)
	core, logs := observer.New(zapcore.DebugLevel)
	opts := testOptions(t, r, "n1")
	opts.RedisURL = "redis://default:" + wrong + "@" + r.Addr() + "/0"
	opts.Logger = zap.New(core)
	opts.Heartbeat = 100 * time.Millisecond // tries again every 100 ms
	n, err := Join(hub.New(hub.Options{}), opts)
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, n)
	const msg = "cannot link to Redis; this node answers unavailable until it can"
	// attempts counts the node's failed attempts to link, and warned
	// those it logged at warn.
	attempts := func() (all, warned []observer.LoggedEntry) {
		all = logs.FilterMessage(msg).All()
		for _, e := range all {
			if e.Level == zapcore.WarnLevel {
				warned = append(warned, e)
			}
		}
		return all, warned
	}
	// waitAttempts waits until the node has tried k times in all.
	waitAttempts := func(k int) []observer.LoggedEntry {
		t.Helper()
		deadline := time.Now().Add(enginetest.Timeout)
		for {
			all, warned := attempts()
			if len(all) >= k {
				return warned
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d attempts to link logged, want %d; logged %v", len(all), k, logs.All())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	field := func(e observer.LoggedEntry, key string) string {
		s, _ := e.ContextMap()[key].(string)
		return s
	}

	warned := waitAttempts(4)
	if len(warned) != 1 {
		t.Fatalf("%d attempts to link with the wrong password logged at warn, want 1: %v", len(warned), warned)
	}
	if e := warned[0]; !strings.Contains(field(e, "error"), "WRONGPASS") ||
		field(e, "redis") != "redis://default:xxxxx@"+r.Addr()+"/0" {
		t.Fatalf("the warning says %v; want the WRONGPASS error and the URL with its password hidden", e.ContextMap())
	}
	if n.Up() {
		t.Fatal("linked with the wrong password")
	}

	// Another reason is told, once too. (An attempt under way as Redis
	// dies may fail in a third way first, and be told too.)
	r.Stop()
	deadline := time.Now().Add(enginetest.Timeout)
	for {
		_, warned = attempts()
		if last := warned[len(warned)-1]; strings.Contains(field(last, "error"), "connection refused") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no warning of the refused connection once Redis was gone; logged %v", logs.All())
		}
		time.Sleep(20 * time.Millisecond)
	}
	all, told := attempts()
	if warned = waitAttempts(len(all) + 3); len(warned) != len(told) {
		t.Fatalf("retries refused the same way were warned of again: %v", warned[len(told)-1:])
	}

	// Redis comes back, with the password the node gives.
	r.Start()
	admin := redis.NewClient(&redis.Options{Addr: r.Addr(), Password: right})
	defer admin.Close()
	if err := admin.ConfigSet(context.Background(), "requirepass", wrong).Err(); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(enginetest.Timeout)
	for !n.Up() {
		if time.Now().After(deadline) {
			t.Fatalf("did not link once the password was right; logged %v", logs.All())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if logs.FilterMessage("linked to the cluster").Len() != 1 {
		t.Errorf("linking was not logged: %v", logs.All())
	}
	for _, e := range logs.All() {
		if strings.Contains(fmt.Sprint(e.Message, e.ContextMap()), wrong) {
			t.Errorf("the password is logged: %v", e)
		}
	}
}
