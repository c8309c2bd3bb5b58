// Package auth decides who may act as whom, and slows those who guess.
// Its larger part is accounts mode: user names and bcrypt password
// hashes from an htpasswd file, checked off the event loops by a bounded
// pool (Logins), with failed logins rate limited per address and per
// account (Throttle). Beside it, ConnectThrottle slows clients that guess
// at tokens, in either mode.
//
// It knows nothing of sockets or protocols; an address comes to it as the
// key a limit counts it under (tally.AddrKey). For a login the engine asks
// it when the attempt may be checked, if at all (Logins.Admit), then to
// check it (Logins.Start: Accounts.Verify, run on a Pool, which can
// withdraw a check whose client has gone, and the outcome recorded), and
// is called back with the answer.
package auth

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"slices"
	"strings"

	"golang.org/x/crypto/bcrypt"

	"duet/proto"
)

// maxFileLine bounds one line of an htpasswd file. A bcrypt entry is a
// name of at most 32 bytes, a colon and 60 bytes of hash; the bound only
// keeps a wrong file (a binary, a log) from being read into one line.
const maxFileLine = 4096

// LineError is a line of an htpasswd file that duet refuses. It names
// the file, the line and, when it could be read, the user.
type LineError struct {
	File string // as given to Parse; may be empty
	Line int    // 1-based
	User string // "" when the line has no user field
	Msg  string
}

func (e *LineError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteByte(':')
	}
	fmt.Fprintf(&b, "%d: ", e.Line)
	if e.User != "" {
		fmt.Fprintf(&b, "user %q: ", e.User)
	}
	b.WriteString(e.Msg)
	return b.String()
}

// MaxCost is the highest bcrypt cost an entry may have. Each step up
// doubles the time one login takes to check: cost 14 is about a second
// of one core, and cost 31, which bcrypt allows, would be a day and a
// half. A login is checked before anything is known about the client, so
// one entry with such a cost would let anyone occupy a password checker
// for that long with a single login attempt.
const MaxCost = 14

// Table is a parsed htpasswd file: account names and their bcrypt
// hashes. It is never changed once built, so any number of logins may
// read it while a reload builds the next one.
type Table struct {
	byKey map[string]entry // by folded name: duet names are unique regardless of case
	// costs holds every entry's cost, ascending: the distribution a name
	// that is not an account draws its cost from (see Accounts.Verify).
	costs []int
	// dummies holds one entry's hash for each cost present: what a name
	// that is not an account is compared against.
	dummies map[int][]byte
}

type entry struct {
	name string // as written in the file; the session gets this spelling
	hash []byte
	cost int
}

// Len is the number of accounts.
func (t *Table) Len() int { return len(t.byKey) }

// maxLineErrors bounds the bad lines Parse reports one by one. A file
// with a few bad entries has each named, so that one run of check-config
// shows all there is to fix; a file that is no htpasswd file at all (a
// log, a key) would otherwise put a line in the log for each of its own.
const maxLineErrors = 20

// Parse reads an htpasswd file. Every entry must be a bcrypt hash as
// `htpasswd -B` writes it ($2y$, or $2a$/$2b$ from other tools); any
// other kind of hash is refused, naming the line and the user, because
// MD5, SHA-1, crypt and plain entries can be cracked or read far more
// easily than bcrypt. Blank lines and lines starting with '#' are
// skipped. A user name must be a valid duet name, and may appear only
// once, regardless of case. file names the source in errors.
//
// A file with bad lines is refused whole, every bad line reported (up to
// maxLineErrors of them, and how many more), each a *LineError, joined
// in the order of the file.
func Parse(r io.Reader, file string) (*Table, error) {
	t := &Table{byKey: make(map[string]entry)}
	var bad []error
	// seen holds every valid name met, by folded name, as first spelt,
	// bad entries' too: a name that appears twice is reported even when
	// one of the two entries is refused for its hash.
	seen := make(map[string]string)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 256), maxFileLine)
	n := 0
	for sc.Scan() {
		n++
		line := bytes.TrimRight(sc.Bytes(), " \t\r")
		trimmed := bytes.TrimLeft(line, " \t")
		if len(trimmed) == 0 || trimmed[0] == '#' {
			continue
		}
		fail := func(user, format string, args ...any) {
			bad = append(bad, &LineError{File: file, Line: n, User: user, Msg: fmt.Sprintf(format, args...)})
		}
		user, hash, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			fail("", "not NAME:HASH")
			continue
		}
		name := string(user)
		if !proto.ValidName(user) {
			// A name duet cannot log in under is a mistake in the file;
			// say so now rather than let the account silently not work.
			fail(printable(name), "not a valid duet name (1 to %d letters, digits, '_', '-' or '.')", proto.MaxNameLen)
			continue
		}
		key := fold(name)
		prev, dup := seen[key]
		if !dup {
			seen[key] = name
		}
		if kind := hashKind(hash); kind != "" {
			fail(name, "%s hash; only bcrypt is accepted: recreate it with htpasswd -B", kind)
			continue
		}
		cost, err := bcrypt.Cost(hash)
		if err != nil || len(hash) != bcryptLen {
			fail(name, "malformed bcrypt hash")
			continue
		}
		if cost > MaxCost {
			fail(name, "bcrypt cost %d is above %d, the most duet accepts: each step up doubles how long any login under this name, right or wrong, occupies a password checker; recreate it with htpasswd -B -C %d or lower", cost, MaxCost, MaxCost)
			continue
		}
		if dup {
			fail(name, "appears twice (also as %q); names are unique regardless of case", prev)
			continue
		}
		t.byKey[key] = entry{name: name, hash: bytes.Clone(hash), cost: cost}
	}
	if err := sc.Err(); err != nil {
		if err == bufio.ErrTooLong {
			bad = append(bad, &LineError{File: file, Line: n + 1, Msg: fmt.Sprintf("line longer than %d bytes: not an htpasswd file", maxFileLine)})
		} else {
			bad = append(bad, fmt.Errorf("%s: %w", file, err))
		}
	}
	if len(bad) > maxLineErrors {
		more := len(bad) - maxLineErrors
		bad = append(bad[:maxLineErrors], fmt.Errorf("%s: %d more bad lines not shown", file, more))
	}
	if len(bad) > 0 {
		return nil, errors.Join(bad...)
	}
	t.dummies = make(map[int][]byte)
	for _, e := range t.byKey {
		t.costs = append(t.costs, e.cost)
		t.dummies[e.cost] = e.hash
	}
	slices.Sort(t.costs)
	return t, nil
}

// bcryptLen is the length of every bcrypt hash in modular crypt format:
// "$2y$", two cost digits, "$", 22 characters of salt, 31 of hash.
const bcryptLen = 60

// hashKind names the kind of a hash duet refuses, or returns "" for a
// bcrypt one. The names follow htpasswd's own options, so the operator
// knows which entry to recreate and how.
func hashKind(hash []byte) string {
	s := string(hash)
	switch {
	case strings.HasPrefix(s, "$2y$"), strings.HasPrefix(s, "$2a$"), strings.HasPrefix(s, "$2b$"):
		return ""
	case strings.HasPrefix(s, "$apr1$"):
		return "MD5 ($apr1$, htpasswd -m)"
	case strings.HasPrefix(s, "{SHA}"):
		return "SHA-1 ({SHA}, htpasswd -s)"
	case strings.HasPrefix(s, "$1$"):
		return "MD5-crypt ($1$)"
	case strings.HasPrefix(s, "$5$"):
		return "SHA-256-crypt ($5$, htpasswd -2)"
	case strings.HasPrefix(s, "$6$"):
		return "SHA-512-crypt ($6$, htpasswd -5)"
	case strings.HasPrefix(s, "$2"):
		return "unknown bcrypt variant"
	case len(s) == 0:
		return "empty"
	case len(s) == 13 && isCryptAlphabet(s):
		return "crypt (DES, htpasswd -d)"
	}
	return "plain-text or unknown"
}

func isCryptAlphabet(s string) bool {
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '/') {
			return false
		}
	}
	return true
}

// dummyFor returns the hash a name that is not an account is compared
// against, given draw, a number fixed for that name (Accounts.Verify).
// The hash is a real entry's, of the cost at the draw's place in the
// file's costs: names that do not exist cost what names that do cost,
// in the same proportions, each always the same. The result of that
// comparison is never used.
func (t *Table) dummyFor(draw uint64) (hash []byte, cost int) {
	if len(t.costs) == 0 {
		// No accounts: every login fails, but still at the price of a
		// comparison at htpasswd -B's default cost.
		return []byte(emptyTableDummy), emptyTableCost
	}
	// The draw's place in the costs: draw/2^64 of the way along.
	i, _ := bits.Mul64(draw, uint64(len(t.costs)))
	cost = t.costs[i]
	return t.dummies[cost], cost
}

// emptyTableDummy is a bcrypt hash (cost 5) of a random password nobody
// knows; only its cost matters.
const (
	emptyTableDummy = "$2y$05$MX7pMQaRnK0k6vpSsoeZ9Oa3CDCxKAD0DepvrsnTLSd4hRvw43hv2"
	emptyTableCost  = 5
)

func fold(name string) string { return strings.ToLower(name) }

// printable quotes at most 40 bytes of a name for an error message, so a
// long or binary line does not flood the log.
func printable(s string) string {
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}
