package config

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// testSecret is 256 bits in hex, as `openssl rand -hex 32` writes them.
const testSecret = "5f0c3b2a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a"

func TestClusterSecretForms(t *testing.T) {
	want, _ := hex.DecodeString(testSecret)
	dir := t.TempDir()
	file := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []Cluster{
		{Secret: testSecret},
		{Secret: strings.ToUpper(testSecret)},
		{Secret: "  " + testSecret + "\n"},
		{Secret: base64.StdEncoding.EncodeToString(want)},
		{Secret: base64.RawURLEncoding.EncodeToString(want)},
		{SecretFile: file("hex", testSecret+"\n", 0o400)},
		{SecretFile: file("b64", base64.StdEncoding.EncodeToString(want)+"\n", 0o400)},
	} {
		got, err := c.SecretBytes()
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%+v: %x, %v", c, got, err)
		}
	}
	// Longer secrets are fine.
	if got, err := (Cluster{Secret: testSecret + testSecret}).SecretBytes(); err != nil || len(got) != 64 {
		t.Errorf("512-bit secret: %d bytes, %v", len(got), err)
	}
	// A file holding something big is refused without reading it whole.
	big := file("big", strings.Repeat("a", maxSecretFile+1), 0o400)
	if _, err := (Cluster{SecretFile: big}).SecretBytes(); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("big file: %v", err)
	}
	// A relative path is read from where duetd runs, / under systemd.
	if _, err := (Cluster{SecretFile: "no-such-cluster-secret"}).SecretBytes(); err == nil ||
		!strings.HasSuffix(err.Error(), "no such file or directory; a relative path is read from the directory duetd runs in (/ under systemd): write it in full") {
		t.Errorf("relative file: %v", err)
	}
	short := file("short", testSecret[:40], 0o400)
	if _, err := (Cluster{SecretFile: short}).SecretBytes(); err == nil ||
		err.Error() != "config: cluster.secret_file: holds 160 bits; want at least 256 random bits (openssl rand -hex 32)" {
		t.Errorf("short file: %v", err)
	}
}

// TestClusterSecretErrors: every refusal names the key to fix and never
// shows the secret, whether it came from the file, the environment or a
// secret file.
func TestClusterSecretErrors(t *testing.T) {
	dir := t.TempDir()
	shortFile := filepath.Join(dir, "short")
	if err := os.WriteFile(shortFile, []byte(testSecret[:60]), 0o400); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, yaml string
		env        map[string]string
		key, msg   string
	}{
		{"missing", "cluster:\n  redis: redis://127.0.0.1:6379\n", nil,
			"cluster.secret", "required in cluster mode"},
		{"short in the file", "cluster:\n  redis: redis://127.0.0.1:6379\n  secret: \"" + testSecret[:60] + "\"\n", nil,
			"cluster.secret", "holds 240 bits; want at least 256 random bits"},
		{"short from the environment", "cluster:\n  redis: redis://127.0.0.1:6379\n",
			map[string]string{"DUETD_CLUSTER_SECRET": testSecret[:60]},
			"cluster.secret", "(set from DUETD_CLUSTER_SECRET)"},
		{"short secret file", "cluster:\n  redis: redis://127.0.0.1:6379\n  secret_file: " + shortFile + "\n", nil,
			"cluster.secret_file", "holds 240 bits"},
		{"not hex nor base64", "cluster:\n  redis: redis://127.0.0.1:6379\n  secret: \"" + testSecret[:63] + "!\"\n", nil,
			"cluster.secret", "neither"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.yaml)
			_, _, err := Load([]string{"--config", path}, env(tt.env))
			if got := errorKeys(err); !slices.Equal(got, []string{tt.key}) {
				t.Fatalf("error keys %v, want [%s]: %v", got, tt.key, err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q lacks %q", err, tt.msg)
			}
			if strings.Contains(err.Error(), testSecret[:30]) {
				t.Errorf("error shows the secret: %v", err)
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Errorf("%T is not an *Error", err)
			}
		})
	}
}

func TestClusterWarnings(t *testing.T) {
	dir := t.TempDir()
	private := filepath.Join(dir, "private")
	public := filepath.Join(dir, "public")
	for p, mode := range map[string]os.FileMode{private: 0o400, public: 0o644} {
		if err := os.WriteFile(p, []byte(testSecret), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		c    Cluster
		want string // "" for no warning
	}{
		{Cluster{Redis: "redis://10.0.0.5:6379/0"}, "cluster.redis: 10.0.0.5 is not a loopback address and the URL carries no user or password"},
		{Cluster{Redis: "rediss://redis.internal:6380"}, "cluster.redis: redis.internal is not a loopback address"},
		{Cluster{Redis: "redis://[2001:db8::1]:6379"}, "cluster.redis: 2001:db8::1 is not"},
		{Cluster{Redis: "redis://:hunter2@10.0.0.5:6379/0"}, ""},
		{Cluster{Redis: "rediss://duet:hunter2@redis.internal:6380"}, ""},
		{Cluster{Redis: "redis://duet@10.0.0.5:6379"}, ""},
		{Cluster{Redis: "redis://127.0.0.1:6379"}, ""},
		{Cluster{Redis: "redis://127.3.2.1:6379"}, ""},
		{Cluster{Redis: "redis://[::1]:6379"}, ""},
		{Cluster{Redis: "redis://localhost:6379"}, ""},
		{Cluster{}, ""},
		{Cluster{Redis: "redis://127.0.0.1:6379", SecretFile: public}, "cluster.secret_file: " + public + " is readable by every user of this host; " +
			"give it to duetd's group alone: chown root:duetd " + public + " && chmod 0640 " + public},
		{Cluster{Redis: "redis://127.0.0.1:6379", SecretFile: private}, ""},
	} {
		w := tt.c.Warnings()
		switch {
		case tt.want == "" && len(w) != 0:
			t.Errorf("%+v: warned %q", tt.c, w)
		case tt.want != "" && (len(w) != 1 || !strings.HasPrefix(w[0].Key+": "+w[0].Msg, tt.want)):
			t.Errorf("%+v: warned %q, want one starting %q", tt.c, w, tt.want)
		}
		for _, s := range w {
			if strings.Contains(s.Msg, "hunter2") {
				t.Errorf("a warning shows the password: %q", s)
			}
		}
	}

	// Load hands them on with the others, for the start's log and
	// check-config's standard error.
	path := writeConfig(t, "cluster:\n  redis: redis://10.0.0.5:6379\n  secret: \""+testSecret+"\"\n")
	_, src, err := Load([]string{"--config", path}, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	ws := src.Warnings()
	if len(ws) != 1 || !strings.HasPrefix(ws[0].Error(), "config: cluster.redis: 10.0.0.5 is not a loopback address") {
		t.Errorf("warnings %v", ws)
	}
}

// TestSettingsFingerprint: the fingerprint changes with each shared
// setting, and with nothing that sizes one node or names it.
func TestSettingsFingerprint(t *testing.T) {
	base := Defaults()
	fp := base.SettingsFingerprint()
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(fp) {
		t.Fatalf("fingerprint %q: want 16 hex digits", fp)
	}
	for _, tc := range []struct {
		key    string
		edit   func(*Config)
		shared bool
	}{
		{"limits.max_line", func(c *Config) { c.Limits.MaxLine = 32768 }, true},
		{"limits.message_rate", func(c *Config) { c.Limits.MessageRate = 10.5 }, true},
		{"resume.window", func(c *Config) { c.Resume.Window = time.Minute }, true},
		{"resume.buffer", func(c *Config) { c.Resume.Buffer++ }, true},
		{"auth.mode", func(c *Config) { c.Auth.Mode = "accounts" }, true},
		{"auth.takeover", func(c *Config) { c.Auth.Takeover = true }, true},
		{"limits.max_conns", func(c *Config) { c.Limits.MaxConns = 250000 }, false},
		{"limits.max_conns_per_ip", func(c *Config) { c.Limits.MaxConnsPerIP = 8 }, false},
		{"resume.max_away", func(c *Config) { c.Resume.MaxAway = 10 }, false},
		{"resume.state_file", func(c *Config) { c.Resume.StateFile = "/var/lib/duetd/sessions" }, false},
		{"cluster.node_id", func(c *Config) { c.Cluster.NodeID = "web-3" }, false},
		{"tcp.listen", func(c *Config) { c.TCP.Listen = ":7071" }, false},
		{"auth.users_file", func(c *Config) { c.Auth.UsersFile = "/etc/duetd/users" }, false},
	} {
		c := Defaults()
		tc.edit(&c)
		if got := c.SettingsFingerprint() != fp; got != tc.shared {
			t.Errorf("%s changed: fingerprint changed %v, want %v", tc.key, got, tc.shared)
		}
		if got := slices.Contains(SharedKeys(), tc.key); got != tc.shared {
			t.Errorf("SharedKeys holds %s: %v, want %v", tc.key, got, tc.shared)
		}
	}
	if again := Defaults(); again.SettingsFingerprint() != fp {
		t.Errorf("the same values gave %s, then %s", fp, again.SettingsFingerprint())
	}
}

// TestKeep: Keep takes the keys named from the other configuration, and
// nothing else.
func TestKeep(t *testing.T) {
	started, loaded := Defaults(), Defaults()
	loaded.Limits.TCPKeepAlive = 30 * time.Second
	loaded.Limits.MaxLine = 32768
	loaded.WS.AllowedOrigins = []string{"https://chat.example"}
	c := loaded
	c.Keep(&started, "limits.tcp_keepalive", "ws.allowed_origins", "no.such_key")
	if c.Limits.TCPKeepAlive != started.Limits.TCPKeepAlive || len(c.WS.AllowedOrigins) != 0 {
		t.Errorf("kept %v and %v, want the started values", c.Limits.TCPKeepAlive, c.WS.AllowedOrigins)
	}
	if c.Limits.MaxLine != 32768 || loaded.Limits.TCPKeepAlive != 30*time.Second {
		t.Errorf("changed what it was not asked to: max_line %d, the loaded keepalive %v", c.Limits.MaxLine, loaded.Limits.TCPKeepAlive)
	}
}
