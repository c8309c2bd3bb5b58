package config

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// MinClusterSecret is the least a cluster secret may hold, in bytes:
// 256 bits. Each node's HMAC and AES-GCM keys are derived from it, and a
// Redis reader holds hashes a guess could be checked against offline, so
// it must be random, not a passphrase.
const MinClusterSecret = 32

// maxSecretFile bounds what is read from cluster.secret_file: a secret
// is a line, and a path pointed at something large by mistake should
// not be read whole.
const maxSecretFile = 4096

// FileHint says what to do about a file the configuration names (the
// users file, the cluster secret file) that cannot be opened, or "" when
// err is neither of the two usual mistakes: a relative path, which the
// service reads from /, and a mode that keeps the duetd user out.
func FileHint(path string, err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist) && !filepath.IsAbs(path):
		return "a relative path is read from the directory duetd runs in (/ under systemd): write it in full"
	case errors.Is(err, fs.ErrPermission):
		return "the service runs as the duetd user, so give the file to its group: chown root:duetd " + path +
			" && chmod 0640 " + path + " (and run check-config with sudo)"
	}
	return ""
}

// SecretBytes returns the cluster secret, from cluster.secret or from
// the file cluster.secret_file names, decoded from hex or base64. The
// error names the key to fix and never quotes the secret.
func (c Cluster) SecretBytes() ([]byte, error) {
	switch {
	case c.Secret != "" && c.SecretFile != "":
		return nil, &Error{Key: "cluster.secret", Msg: "set cluster.secret or cluster.secret_file, not both"}
	case c.Secret != "":
		return decodeSecret("cluster.secret", c.Secret)
	case c.SecretFile != "":
		f, err := os.Open(c.SecretFile)
		if err != nil {
			msg := "cannot read it: " + err.Error()
			if hint := FileHint(c.SecretFile, err); hint != "" {
				msg += "; " + hint
			}
			return nil, &Error{Key: "cluster.secret_file", Msg: msg}
		}
		defer f.Close()
		raw, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
		if err != nil {
			return nil, &Error{Key: "cluster.secret_file", Msg: "cannot read it: " + err.Error()}
		}
		if len(raw) > maxSecretFile {
			return nil, &Error{Key: "cluster.secret_file", Msg: fmt.Sprintf("%s is longer than %d bytes; want one line holding the secret", c.SecretFile, maxSecretFile)}
		}
		return decodeSecret("cluster.secret_file", string(raw))
	}
	return nil, &Error{Key: "cluster.secret", Msg: "required in cluster mode (cluster.redis is set): every node needs the same secret of at least 256 random bits, hex or base64 (openssl rand -hex 32); or name a file holding it in cluster.secret_file"}
}

// decodeSecret reads a secret written as hex or as base64 (standard or
// URL alphabet, padded or not), surrounding white space ignored. Hex is
// tried first, so 64 hex digits are 32 bytes, not 48. Every node
// decodes the same way, so one secret written in both forms is one key.
func decodeSecret(key, s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	b, err := hex.DecodeString(s)
	if err != nil {
		b = nil
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			if d, err := enc.DecodeString(s); err == nil {
				b = d
				break
			}
		}
	}
	if b == nil {
		return nil, &Error{Key: key, Msg: "want at least 256 random bits written as hex or base64 (openssl rand -hex 32); got something that is neither"}
	}
	if len(b) < MinClusterSecret {
		return nil, &Error{Key: key, Msg: fmt.Sprintf("holds %d bits; want at least 256 random bits (openssl rand -hex 32)", 8*len(b))}
	}
	return b, nil
}

// check is Validate's part for the cluster keys.
func (c Cluster) check() []error {
	var problems []error
	if c.Redis != "" {
		if err := checkRedisURL(c.Redis); err != nil {
			problems = append(problems, &Error{Key: "cluster.redis", Msg: err.Error()})
		}
	}
	// A secret given is checked even on a single node, where it has no
	// use yet: a bad one is found before the node joins a cluster.
	if c.Redis != "" || c.Secret != "" || c.SecretFile != "" {
		if _, err := c.SecretBytes(); err != nil {
			problems = append(problems, err)
		}
	}
	return problems
}

// Warnings lists what in the cluster keys is allowed but unsafe, each an
// *Error naming its key. Config.Warnings includes them, so duetd logs
// them at start and `duetd check-config` prints them.
func (c Cluster) Warnings() []*Error {
	var w []*Error
	if c.Redis != "" {
		if u, err := url.Parse(c.Redis); err == nil && u.User == nil && !isLoopbackHost(u.Hostname()) {
			w = append(w, &Error{Key: "cluster.redis", Msg: fmt.Sprintf("%s is not a loopback address and the URL carries no user or password: "+
				"whoever can reach that Redis can read the directory and deny service; give Redis an ACL user and password "+
				"(redis://user:password@host:6379) and use rediss:// across networks you do not control", u.Hostname())})
		}
	}
	if c.SecretFile != "" {
		if fi, err := os.Stat(c.SecretFile); err == nil && fi.Mode().Perm()&0o004 != 0 {
			// The service reads it as the duetd user, and the file is
			// root's (OPERATIONS.md): 0400 would keep duetd out too.
			w = append(w, &Error{Key: "cluster.secret_file", Msg: fmt.Sprintf("%s is readable by every user of this host; give it to duetd's group alone: chown root:duetd %s && chmod 0640 %s",
				c.SecretFile, c.SecretFile, c.SecretFile)})
		}
	}
	return w
}

// isLoopbackHost reports whether host (a name or an address from a URL)
// stays on this machine.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Shared settings are what a session or a message is held to on
// whichever node has it at the time, so that every node of a cluster
// should have the same values (docs/CLUSTER.md): resume.* and limits.*,
// and who may log in under which name. Left out are the bounds that
// size one node's share of the load, which a larger machine may well
// raise (limits.max_conns, limits.max_conns_per_ip, resume.max_away,
// resume.max_away_per_ip), and resume.state_file, a single node's path
// that a node of a cluster refuses.
var sharedSections = []string{"limits.", "resume.", "auth.mode", "auth.takeover"}

var notShared = []string{
	"limits.max_conns", "limits.max_conns_per_ip",
	"resume.max_away", "resume.max_away_per_ip", "resume.state_file",
}

// SharedKeys returns the keys of the shared settings, sorted.
func SharedKeys() []string {
	var out []string
	for _, name := range Keys() {
		if !slices.Contains(notShared, name) && slices.ContainsFunc(sharedSections, func(s string) bool {
			return name == s || strings.HasSuffix(s, ".") && strings.HasPrefix(name, s)
		}) {
			out = append(out, name)
		}
	}
	return out
}

// SettingsFingerprint is a short hash of the shared settings: 16 hex
// digits, the first 8 bytes of the SHA-256 of one "key=value" line per
// shared key, sorted by key, each value as check-config prints it. Each
// node of a cluster publishes its own, and warns of a node whose
// fingerprint differs: nothing else would tell an operator that a
// session is held to other limits on the next node. It is a plain hash,
// not keyed, so that `duetd check-config` prints the same one on every
// node given the same values, before any of them starts.
func (c *Config) SettingsFingerprint() string {
	h := sha256.New()
	for _, name := range SharedKeys() {
		fmt.Fprintf(h, "%s=%s\n", name, formatValue(keyByName[name].field(c)))
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}
