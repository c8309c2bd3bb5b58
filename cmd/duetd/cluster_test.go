package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"duet/config"
	"duet/engine/enginetest"
)

// clusterSecret is 256 bits in hex, as `openssl rand -hex 32` writes them.
const clusterSecret = "8c1e0f7a3b5d9e2c4a6f8b0d1e3c5a7f9b2d4e6a8c0f1b3d5e7a9c2e4f6a8b0d"

// clusterNode is the config of node id of a cluster on the Redis at
// redisURL, its closes spread over drainPeriod as it drains.
func clusterNode(redisURL, id, drainPeriod string) string {
	return "cluster:\n  redis: \"" + redisURL + "\"\n  node_id: " + id + "\n  secret: \"" + clusterSecret + "\"\n" +
		"shutdown:\n  drain_period: " + drainPeriod + "\n"
}

// TestClusterCheckConfig: check-config refuses a cluster without a
// secret, naming the key; it hides the secret, and warns of a Redis
// that anyone on the network could use.
func TestClusterCheckConfig(t *testing.T) {
	bin := duetdBinary(t)
	run := func(env ...string) (code int, stdout, stderr string) {
		cmd := exec.Command(bin, "check-config")
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "DUETD_") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Env = append(cmd.Env, env...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, out.String(), errOut.String()
	}

	code, _, stderr := run("DUETD_CLUSTER_REDIS=redis://127.0.0.1:6379")
	if code != 2 || !strings.Contains(stderr, "config: cluster.secret: required in cluster mode") {
		t.Errorf("no secret: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = run("DUETD_CLUSTER_REDIS=redis://127.0.0.1:6379", "DUETD_CLUSTER_SECRET="+clusterSecret[:48])
	if code != 2 || !strings.Contains(stderr, "config: cluster.secret: holds 192 bits; want at least 256") ||
		strings.Contains(stderr, clusterSecret[:48]) {
		t.Errorf("short secret: exit %d, stderr %q", code, stderr)
	}

	code, stdout, stderr := run("DUETD_CLUSTER_REDIS=redis://10.0.0.5:6379/0", "DUETD_CLUSTER_SECRET="+clusterSecret)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if !strings.Contains(stderr, "warning: config: cluster.redis: 10.0.0.5 is not a loopback address and the URL carries no user or password") {
		t.Errorf("no warning:\n%s", stderr)
	}
	if strings.Contains(stdout, clusterSecret[:16]) || !strings.Contains(stdout, `"xxxxx"`) {
		t.Errorf("the secret is not hidden:\n%s", stdout)
	}
	// The fingerprint the nodes compare, as a node with these values
	// publishes it.
	want := config.Defaults()
	if !strings.Contains(stdout, "\n# shared settings fingerprint: "+want.SettingsFingerprint()+" ") {
		t.Errorf("no fingerprint %s:\n%s", want.SettingsFingerprint(), stdout)
	}
}

// TestClusterProcess runs duetd in cluster mode against a real Redis,
// with the secret in a file: it warns at start of nothing (Redis is on
// loopback), refuses a batch someone publishes on its channel, counts it
// in its metrics and logs it, and never logs the secret. It publishes
// the fingerprint of its shared settings, and a reload that changes
// one publishes the new one.
func TestClusterProcess(t *testing.T) {
	r := enginetest.StartRedis(t)
	secretFile := filepath.Join(t.TempDir(), "cluster-secret")
	if err := os.WriteFile(secretFile, []byte(clusterSecret+"\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	conf := "cluster:\n  redis: \"" + r.URL() + "\"\n  node_id: p1\n  secret_file: \"" + secretFile + "\"\n"
	d := startDaemon(t, conf)
	d.WaitReady()
	e, _ := d.WaitLog(0, "cluster mode")
	if e["linked"] != true {
		t.Fatalf("cluster mode: %v", e)
	}
	defaults := config.Defaults()
	if e["settings"] != defaults.SettingsFingerprint() {
		t.Errorf("cluster mode: settings %v, want %s", e["settings"], defaults.SettingsFingerprint())
	}

	c := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer c.Close()
	if err := c.Publish(context.Background(), "duet:node:p1", "not a batch").Err(); err != nil {
		t.Fatal(err)
	}
	e, _ = d.WaitLog(0, "refused a batch published on this node's channel")
	if e["reason"] != "malformed" {
		t.Errorf("log: %v", e)
	}
	want := map[string]float64{
		`duet_cluster_batches_rejected_total{reason="malformed"}`: 1,
		`duet_cluster_batches_rejected_total{reason="forged"}`:    0,
		`duet_cluster_batches_rejected_total{reason="replayed"}`:  0,
		`duet_cluster_batches_rejected_total{reason="stale"}`:     0,
		`duet_cluster_records_rejected_total`:                     0,
		`duet_cluster_foreign_nodes`:                              0,
		`duet_cluster_nodes_with_other_settings`:                  0,
		`duet_cluster_batches_sent_total`:                         0,
		`duet_cluster_pairings_total`:                             0,
		`duet_cluster_pairings_cut_total{cause="redis_lost"}`:     0,
		`duet_cluster_pairings_cut_total{cause="node_gone"}`:      0,
		`duet_cluster_pairings_cut_total{cause="node_deaf"}`:      0,
		`duet_cluster_pairings_cut_total{cause="queue_full"}`:     0,
		`duet_cluster_pairings_cut_total{cause="move_timeout"}`:   0,
		`duet_cluster_pairings_cut_total{cause="lease_lapsed"}`:   0,
		`duet_cluster_sessions_parked_total`:                      0,
		`duet_cluster_sessions_taken_up_total`:                    0,
		`duet_cluster_linked`:                                     1,
	}
	var got map[string]float64
	deadline := time.Now().Add(waitLimit)
	for {
		got = scrape(t, "http://"+d.Admin+"/metrics")
		if matches(got, want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}

	// What it publishes for the other nodes to compare: the values in
	// effect, after a reload too. limits.tcp_keepalive changes only on
	// restart, so it is not in effect, nor in what is published.
	published := func(want string) {
		t.Helper()
		var v string
		deadline := time.Now().Add(waitLimit)
		for v != want && time.Now().Before(deadline) {
			v, _ = c.Get(context.Background(), "duet:settings:p1").Result()
			time.Sleep(50 * time.Millisecond)
		}
		if v != want {
			t.Errorf("duet:settings:p1 = %q, want %q", v, want)
		}
	}
	published(defaults.SettingsFingerprint())
	reloaded := defaults
	reloaded.Limits.MaxLine = 32768
	d.writeConfig(conf + "limits:\n  max_line: 32768\n  tcp_keepalive: 30s\n")
	d.Signal(syscall.SIGHUP)
	published(reloaded.SettingsFingerprint())

	for _, l := range d.Lines() {
		if strings.Contains(l, `"level":"warn"`) && strings.Contains(l, "cluster.") {
			t.Errorf("a warning for a loopback Redis: %s", l)
		}
		if strings.Contains(l, clusterSecret[:16]) {
			t.Errorf("the secret is logged: %s", l)
		}
	}
}

// TestClusterStartWarning: a Redis URL without credentials on a host
// that is not loopback is warned of at start. (192.0.2.1 is reserved for
// documentation and never answers; the node starts unlinked.)
func TestClusterStartWarning(t *testing.T) {
	d := startDaemon(t, "cluster:\n  redis: \"redis://192.0.2.1:6379\"\n  secret: \""+clusterSecret+"\"\n")
	d.WaitReady()
	for _, l := range d.Lines() {
		if strings.Contains(l, `"level":"warn"`) && strings.Contains(l, "cluster.redis: 192.0.2.1 is not a loopback address and the URL carries no user or password") {
			return
		}
	}
	t.Errorf("no warning in:\n%s", strings.Join(d.Lines(), "\n"))
}

// TestClusterReadyzFollowsTheLink: a node of a cluster is ready only
// while it is linked to Redis, since until then it answers every login
// unavailable. One given the wrong Redis password answers /readyz 503,
// saying why, and logs Redis's answer, never the password; one given
// the right one answers 200, turns 503 when Redis dies and 200 again
// when it is back. (Before, /readyz answered 200 on a node that could
// not link, so a rolling restart went on past it, and a load balancer
// sent it users.)
func TestClusterReadyzFollowsTheLink(t *testing.T) {
	const right, wrong = "RightPW123456", "WrongPWzzzz99"
	r := enginetest.StartRedisAuth(t, right)
	conf := func(id, password string) string {
		return "log:\n  level: debug\ncluster:\n  redis: \"redis://default:" + password + "@" + r.Addr() + "/0\"\n" +
			"  node_id: " + id + "\n  secret: \"" + clusterSecret + "\"\n"
	}
	denied, linked := startDaemon(t, conf("denied", wrong)), startDaemon(t, conf("linked", right))
	denied.WaitReady()
	linked.WaitReady()

	readyz := func(d *daemon) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + d.Admin + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	// waitReadyz waits until d's /readyz answers code: a node finds its
	// link lost or back within a heartbeat or two.
	waitReadyz := func(d *daemon, code int, what string) {
		t.Helper()
		deadline := time.Now().Add(waitLimit)
		for {
			got, body := readyz(d)
			if got == code {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: /readyz answers %d %q, want %d", what, got, body, code)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	if code, body := readyz(denied); code != 503 || body != "not linked to Redis\n" {
		t.Errorf("a node with the wrong Redis password: /readyz %d %q", code, body)
	}
	if e, _ := denied.WaitLog(0, "cannot link to Redis; this node answers unavailable until it can"); !strings.Contains(fmt.Sprint(e["error"]), "WRONGPASS") {
		t.Errorf("the node does not say why it cannot link: %v", e)
	}
	waitReadyz(linked, 200, "a node linked to Redis")

	// The metric an alert reads says the same as /readyz.
	linkedMetric := func(d *daemon) float64 { return scrape(t, "http://"+d.Admin+"/metrics")["duet_cluster_linked"] }
	if v := linkedMetric(linked); v != 1 {
		t.Errorf("a node linked to Redis: duet_cluster_linked %v", v)
	}
	if v := linkedMetric(denied); v != 0 {
		t.Errorf("a node with the wrong Redis password: duet_cluster_linked %v", v)
	}

	r.Stop()
	waitReadyz(linked, 503, "a node that lost Redis")
	if code, body := readyz(linked); code == 503 && body != "not linked to Redis\n" {
		t.Errorf("a node that lost Redis: /readyz says %q", body)
	}
	if v := linkedMetric(linked); v != 0 {
		t.Errorf("a node that lost Redis: duet_cluster_linked %v", v)
	}
	r.Start()
	waitReadyz(linked, 200, "a node whose Redis is back")
	if code, _ := readyz(denied); code != 503 {
		t.Errorf("a node with the wrong Redis password, Redis back: /readyz %d", code)
	}
	for _, d := range []*daemon{denied, linked} {
		for _, l := range d.Lines() {
			if strings.Contains(l, wrong) || strings.Contains(l, right) {
				t.Errorf("a Redis password is logged: %s", l)
			}
		}
	}
}

// TestClusterDrainProcess: two duetd processes on a real Redis. POST
// /drain on the first tells its line client to reconnect, with its
// resume key, parks the session, says so, and leaves the node up but not
// ready; the client resumes on the second node, still paired. SIGTERM
// then drains the second, which says so and exits cleanly.
func TestClusterDrainProcess(t *testing.T) {
	r := enginetest.StartRedis(t)
	p1, p2 := startDaemon(t, clusterNode(r.URL(), "p1", "300ms")), startDaemon(t, clusterNode(r.URL(), "p2", "300ms"))
	n2, alice, bob := pairAcrossNodes(t, p1, p2)

	resp, err := http.Post("http://"+p1.Admin+"/drain", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "drained: 1 connection told to reconnect, 0 told their session could not be kept (not_parked), 1 session parked\n" {
		t.Fatalf("POST /drain: %d %q", resp.StatusCode, body)
	}
	alice.Expect(`^\* the server is restarting; reconnect and type /resume ` + alice.Key + ` within 2m$`)
	alice.ExpectClosed()
	bob.Expect(`^\* alice's server is restarting; waiting up to 2m for alice to come back$`)
	if resp, err := http.Get("http://" + p1.Admin + "/readyz"); err != nil || resp.StatusCode != 503 {
		t.Fatalf("a drained node's /readyz: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	back := resumeOnNode(t, n2, alice, bob)

	// Each node counts its side: the pairing on bob's node, where he
	// connected, the park on alice's first node and its taking up on
	// the second.
	for addr, want := range map[string]map[string]float64{
		p1.Admin: {`duet_cluster_pairings_total`: 0, `duet_cluster_sessions_parked_total`: 1, `duet_cluster_sessions_taken_up_total`: 0},
		p2.Admin: {`duet_cluster_pairings_total`: 1, `duet_cluster_sessions_parked_total`: 0, `duet_cluster_sessions_taken_up_total`: 1},
	} {
		got := scrape(t, "http://"+addr+"/metrics")
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: %s = %v, want %v", addr, k, got[k], v)
			}
		}
	}

	p2.Signal(syscall.SIGTERM)
	// bob may be told to go first, and back then told he is away.
	l := back.Line()
	if strings.HasPrefix(l, "* bob's server is restarting") {
		l = back.Line()
	}
	checkDrainNotice(t, l)
	if code := p2.WaitExit(waitLimit); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if e, _ := p2.WaitLog(0, "drained"); e["connections"] != float64(2) || e["parked"] != float64(2) {
		t.Fatalf("p2 drained: %v", e)
	}
}

// pairAcrossNodes waits for nodes p1 and p2 to listen, logs alice in
// on p1 and bob on p2, and pairs them; n2 dials p2.
func pairAcrossNodes(t *testing.T, p1, p2 *daemon) (n2 *enginetest.Daemon, alice, bob *enginetest.LineClient) {
	t.Helper()
	p1.WaitReady()
	p2.WaitReady()
	n1 := &enginetest.Daemon{TCP: p1.TCP, Resume: true}
	n2 = &enginetest.Daemon{TCP: p2.TCP, Resume: true}
	alice = n1.DialLine(t).Login("alice")
	bob = n2.DialLine(t).Login("bob")
	bob.Send("/connect " + alice.Token)
	bob.Expect(`^\* you are connected with alice$`)
	alice.Expect(`^\* bob is connected$`)
	return n2, alice, bob
}

// resumeOnNode resumes alice's session on node n2, bob's, where she
// is still with him: bob is told she is back, and what she sends
// reaches him.
func resumeOnNode(t *testing.T, n2 *enginetest.Daemon, alice, bob *enginetest.LineClient) *enginetest.LineClient {
	t.Helper()
	back := n2.DialLine(t)
	back.Send("/resume " + alice.Key)
	back.Expect(`^\* resumed: you are alice, your token is ` + alice.Token + `; you are connected with bob$`)
	back.ExpectKey()
	back.Expect(`^\* anything you typed as your connection dropped may not have reached bob; ask bob, or send it again$`)
	bob.Expect(`^\* alice is back$`)
	back.Send("hello from p2")
	bob.Expect(`^<alice> hello from p2$`)
	return back
}

func checkDrainNotice(t *testing.T, l string) {
	t.Helper()
	if !regexp.MustCompile(`^\* the server is restarting; reconnect and type /resume [0-9a-z]{26} within 2m$`).MatchString(l) {
		t.Fatalf("want the drain's notice, got %q", l)
	}
}

// TestClusterDrainWithoutRedis: a node that has lost Redis cannot park
// its sessions, so it must not tell its clients to resume them. POST
// /drain is refused, saying why, and leaves the node as it was; SIGTERM
// shuts the node down as a single node does, telling every user the
// truth: the server is shutting down, and the conversation with it.
func TestClusterDrainWithoutRedis(t *testing.T) {
	r := enginetest.StartRedis(t)
	p1 := startDaemon(t, clusterNode(r.URL(), "p1", "300ms"))
	p1.WaitReady()
	n1 := &enginetest.Daemon{TCP: p1.TCP, Resume: true}
	alice := n1.DialLine(t).Login("alice")
	carol := n1.DialLine(t).Login("carol")
	carol.Send("/connect " + alice.Token)
	carol.Expect(`^\* you are connected with alice$`)
	alice.Expect(`^\* carol is connected$`)

	r.Stop()
	p1.WaitLog(0, "lost the link to Redis")
	resp, err := http.Post("http://"+p1.Admin+"/drain", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(body), "Redis") {
		t.Fatalf("POST /drain without Redis: %d %q", resp.StatusCode, body)
	}
	// Not ready while unlinked, but not drained either: the refused
	// drain left the node as it was.
	if resp, err := http.Get("http://" + p1.Admin + "/readyz"); err != nil {
		t.Fatal(err)
	} else {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || string(body) != "not linked to Redis\n" {
			t.Fatalf("/readyz after a refused drain: %d %q", resp.StatusCode, body)
		}
	}
	carol.Send("still here")
	alice.Expect(`^<carol> still here$`)

	p1.Signal(syscall.SIGTERM)
	alice.Expect(`^\* the server is shutting down; goodbye$`)
	carol.Expect(`^\* the server is shutting down; goodbye$`)
	if code := p1.WaitExit(waitLimit); code != 0 {
		t.Fatalf("exit %d", code)
	}
	p1.WaitLog(0, "cannot drain: not linked to Redis; shutting down instead, which ends every session")
}

// TestClusterStopWithAStalledReaderKeepsTheDeadline: a node of a cluster
// stops within about shutdown_timeout, its drain and its shutdown
// included, even when a reader that stopped reading holds the drain to
// the end of it. (The shutdown after the drain used to get a deadline of
// its own: twice shutdown_timeout, past the unit's TimeoutStopSec with
// the defaults.)
func TestClusterStopWithAStalledReaderKeepsTheDeadline(t *testing.T) {
	r := enginetest.StartRedis(t)
	d := startDaemon(t, "shutdown_timeout: 2s\n"+clusterNode(r.URL(), "s1", "0s"))
	d.WaitReady()
	if e, _ := d.WaitLog(0, "cluster mode"); e["linked"] != true {
		t.Fatalf("cluster mode: %v", e)
	}
	cl := &enginetest.Daemon{TCP: d.TCP, WS: d.WS, Resume: true}
	alice := cl.DialLine(t)
	enginetest.SmallWindow(t, alice.Conn)
	alice.Login("alice")
	bob := cl.DialLine(t).Login("bob")
	bob.Send("/connect " + alice.Token)
	bob.Expect(`^\* you are connected with alice$`)
	alice.Expect(`^\* bob is connected$`)
	// alice reads nothing more; bob says megabytes to her.
	enginetest.SendNumbered(t, bob.Conn, 20000)
	start := time.Now()
	d.Signal(syscall.SIGTERM)
	if code := d.WaitExit(20 * time.Second); code != 0 {
		t.Errorf("exit code %d", code)
	}
	if took := time.Since(start); took > 3500*time.Millisecond {
		t.Errorf("the stop took %v with shutdown_timeout 2s", took)
	}
}

// TestRedisClientLogsThroughTheLogger: what the Redis client has to say
// while Redis cannot be reached (a dial failing, once a second) comes
// out as the daemon's own JSON lines, at debug level, and not as plain
// text on stderr that would break `journalctl -o cat | jq .`. The loss
// itself is the node's to log, at warn.
func TestRedisClientLogsThroughTheLogger(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := closed.Addr().String()
	closed.Close() // nothing listens there: every dial is refused
	d := startDaemon(t, "log:\n  level: debug\ncluster:\n  redis: \"redis://"+addr+"\"\n  secret: \""+clusterSecret+"\"\n")
	d.WaitReady()
	e, _ := d.WaitLog(0, "redis client")
	if e.level() != "debug" || !strings.Contains(fmt.Sprint(e["said"]), "connection refused") {
		t.Errorf("the Redis client's line: %v", e)
	}
	for _, l := range d.Lines() {
		var e logEntry
		if json.Unmarshal([]byte(l), &e) != nil {
			t.Errorf("not a JSON line: %q", l)
		}
	}
}
