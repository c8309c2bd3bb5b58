package auth

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// Hashes as htpasswd writes them (password "pw" unless noted).
const (
	hashY   = "$2y$04$OTGhsW1/M1LpZQYfxMlHSuOcxDk6tnWWQmuxyps9QFPViP6LqS3N2" // htpasswd -B -C 4
	hashA   = "$2a$04$OTGhsW1/M1LpZQYfxMlHSuOcxDk6tnWWQmuxyps9QFPViP6LqS3N2" // the same, as Go and older tools write it
	hashB   = "$2b$04$OTGhsW1/M1LpZQYfxMlHSuOcxDk6tnWWQmuxyps9QFPViP6LqS3N2" // the same, as OpenBSD writes it
	hashMD5 = "$apr1$/2EsexAY$8pepVp3tFVBvBl7Vb8plX0"                        // htpasswd -m
	hashSHA = "{SHA}GpHWL3ymc5liWkNopqtdSjuqYHM="                            // htpasswd -s
	hashDES = "2NCaSD63HV5mw"                                                // htpasswd -d
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		users   []string // accounts expected, in any case
		errLine int      // 0: no error
		errUser string
		errHas  string
	}{
		{name: "empty", file: "", users: nil},
		{name: "one $2y$", file: "alice:" + hashY + "\n", users: []string{"alice"}},
		{name: "$2a$ and $2b$", file: "a:" + hashA + "\nb:" + hashB + "\n", users: []string{"a", "b"}},
		{name: "no final newline", file: "alice:" + hashY, users: []string{"alice"}},
		{name: "CRLF", file: "alice:" + hashY + "\r\nbob:" + hashY + "\r\n", users: []string{"alice", "bob"}},
		{name: "comments and blanks", file: "# users\n\n  \n\t# indented comment\nalice:" + hashY + "\n", users: []string{"alice"}},
		{name: "md5", file: "alice:" + hashY + "\nbob:" + hashMD5 + "\n", errLine: 2, errUser: "bob", errHas: "MD5"},
		{name: "sha", file: "# c\nbob:" + hashSHA + "\n", errLine: 2, errUser: "bob", errHas: "SHA-1"},
		{name: "crypt", file: "carol:" + hashDES + "\n", errLine: 1, errUser: "carol", errHas: "crypt"},
		{name: "plain", file: "dave:secret\n", errLine: 1, errUser: "dave", errHas: "plain"},
		{name: "empty hash", file: "dave:\n", errLine: 1, errUser: "dave", errHas: "empty"},
		{name: "sha512-crypt", file: "erin:$6$salt$abc\n", errLine: 1, errUser: "erin", errHas: "SHA-512"},
		{name: "truncated bcrypt", file: "frank:" + hashY[:50] + "\n", errLine: 1, errUser: "frank", errHas: "malformed"},
		{name: "bcrypt with junk", file: "frank:" + hashY + "x\n", errLine: 1, errUser: "frank", errHas: "malformed"},
		{name: "bad cost", file: "frank:$2y$99" + hashY[6:] + "\n", errLine: 1, errUser: "frank", errHas: "malformed"},
		// A cost bcrypt allows but no login should pay: refused by name.
		{name: "cost 31", file: "alice:" + hashY + "\nmallory:$2y$31" + hashY[6:] + "\n", errLine: 2, errUser: "mallory", errHas: "bcrypt cost 31 is above 14"},
		{name: "cost 15", file: "mallory:$2b$15" + hashY[6:] + "\n", errLine: 1, errUser: "mallory", errHas: "htpasswd -B -C 14 or lower"},
		{name: "cost 14", file: "alice:$2y$14" + hashY[6:] + "\n", users: []string{"alice"}},
		{name: "no colon", file: "\nalice " + hashY + "\n", errLine: 2, errHas: "NAME:HASH"},
		{name: "bad name", file: "al ice:" + hashY + "\n", errLine: 1, errUser: "al ice", errHas: "valid duet name"},
		{name: "empty name", file: ":" + hashY + "\n", errLine: 1, errHas: "valid duet name"},
		{name: "duplicate in another case", file: "alice:" + hashY + "\nAlice:" + hashY + "\n", errLine: 2, errUser: "Alice", errHas: "twice"},
		{name: "long line", file: strings.Repeat("x", 5000) + "\n", errLine: 1, errHas: "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab, err := Parse(strings.NewReader(tt.file), "users")
			if tt.errLine != 0 {
				var le *LineError
				if !errors.As(err, &le) {
					t.Fatalf("err = %v, want a LineError", err)
				}
				if le.Line != tt.errLine || le.User != tt.errUser || !strings.Contains(le.Msg, tt.errHas) {
					t.Fatalf("err = %+v, want line %d user %q msg with %q", le, tt.errLine, tt.errUser, tt.errHas)
				}
				if !strings.HasPrefix(err.Error(), "users:") {
					t.Fatalf("error does not name the file: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tab.Len() != len(tt.users) {
				t.Fatalf("%d accounts, want %d", tab.Len(), len(tt.users))
			}
			for _, u := range tt.users {
				if _, ok := tab.byKey[fold(u)]; !ok {
					t.Errorf("account %q missing", u)
				}
			}
			for i := range 16 {
				if h, _ := tab.dummyFor(uint64(i) << 60); len(h) != bcryptLen {
					t.Errorf("dummy hash %q", h)
				}
			}
		})
	}
}

// TestParseReportsEveryBadLine: a file with several bad lines is refused
// with each of them named, in order, good lines between them or not, so
// that one run of check-config shows all there is to fix. A name that
// appears twice is found even when its first entry is refused.
func TestParseReportsEveryBadLine(t *testing.T) {
	file := "bob:" + hashMD5 + "\n" + // 1
		"alice:" + hashY + "\n" + // 2, good
		"al ice:" + hashY + "\n" + // 3
		"# a comment\n" + // 4
		"carol " + hashY + "\n" + // 5
		"ALICE:" + hashY + "\n" + // 6
		"Bob:" + hashY + "\n" + // 7
		"dave:secret\n" // 8
	tab, err := Parse(strings.NewReader(file), "users")
	if tab != nil {
		t.Errorf("a table with %d accounts from a file with bad lines", tab.Len())
	}
	want := []struct {
		line      int
		user, has string
	}{
		{1, "bob", "MD5"},
		{3, "al ice", "valid duet name"},
		{5, "", "NAME:HASH"},
		{6, "ALICE", `appears twice (also as "alice")`},
		{7, "Bob", `appears twice (also as "bob")`},
		{8, "dave", "plain"},
	}
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("err = %v, want the bad lines joined", err)
	}
	got := joined.Unwrap()
	if len(got) != len(want) {
		t.Fatalf("%d errors, want %d:\n%v", len(got), len(want), err)
	}
	for i, w := range want {
		var le *LineError
		if !errors.As(got[i], &le) || le.Line != w.line || le.User != w.user || !strings.Contains(le.Msg, w.has) {
			t.Errorf("error %d = %v, want line %d user %q msg with %q", i, got[i], w.line, w.user, w.has)
		}
	}
	// The first is what errors.As finds, as when only one line was bad.
	var le *LineError
	if !errors.As(err, &le) || le.Line != 1 {
		t.Errorf("errors.As found %v", le)
	}
	// Each bad line is a line of the message.
	if lines := strings.Split(err.Error(), "\n"); len(lines) != len(want) || !strings.HasPrefix(lines[5], "users:8: ") {
		t.Errorf("message:\n%s", err)
	}
}

// TestParseBoundsTheBadLines: a file that is not an htpasswd file at all
// names its first bad lines, and then only how many more there are.
func TestParseBoundsTheBadLines(t *testing.T) {
	_, err := Parse(strings.NewReader(strings.Repeat("not an entry\n", maxLineErrors+7)), "users")
	lines := strings.Split(fmt.Sprint(err), "\n")
	if len(lines) != maxLineErrors+1 || lines[maxLineErrors-1] != "users:"+strconv.Itoa(maxLineErrors)+": not NAME:HASH" ||
		lines[maxLineErrors] != "users: 7 more bad lines not shown" {
		t.Errorf("%d lines:\n%v", len(lines), err)
	}
}

func TestVerify(t *testing.T) {
	tab, err := Parse(strings.NewReader("Alice:"+hashY+"\nbob:"+hashA+"\n"), "users")
	if err != nil {
		t.Fatal(err)
	}
	a := NewAccounts(tab)
	tests := []struct {
		name, password string
		want           string
		ok             bool
	}{
		{"Alice", "pw", "Alice", true},
		{"alice", "pw", "Alice", true}, // any case; the file's spelling wins
		{"bob", "pw", "bob", true},     // $2a$
		{"alice", "PW", "", false},
		{"alice", "", "", false},
		{"nobody", "pw", "", false},
		{"nobody", "", "", false},
	}
	for _, tt := range tests {
		got, ok := a.Verify([]byte(tt.name), []byte(tt.password))
		if got != tt.want || ok != tt.ok {
			t.Errorf("Verify(%q, %q) = %q, %v; want %q, %v", tt.name, tt.password, got, ok, tt.want, tt.ok)
		}
	}
}

func TestEmptyTableVerifies(t *testing.T) {
	tab, err := Parse(strings.NewReader("# nobody yet\n"), "users")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := NewAccounts(tab).Verify([]byte("alice"), []byte("pw")); ok {
		t.Fatal("login with no accounts")
	}
}

// TestDummyCostFollowsTheFile: names that are not accounts draw their
// cost from the file's costs in their proportions, each name always the
// same one, and are checked against a real hash of that cost.
func TestDummyCostFollowsTheFile(t *testing.T) {
	cost5 := "$2y$05" + hashY[6:]
	tab, err := Parse(strings.NewReader("a:"+hashY+"\nb:"+hashA+"\nc:"+cost5+"\n"), "users")
	if err != nil {
		t.Fatal(err)
	}
	a := NewAccounts(tab)
	counts := map[int]int{}
	const names = 3000
	for i := range names {
		name := []byte("nobody" + strconv.Itoa(i))
		c := a.Cost(name)
		counts[c]++
		if again := a.Cost(name); again != c {
			t.Fatalf("%s drew cost %d, then %d", name, c, again)
		}
		if h, hc := tab.dummyFor(a.draw(name)); hc != c || mustCost(t, h) != c {
			t.Fatalf("%s: Cost says %d, the dummy hash has cost %d", name, c, mustCost(t, h))
		}
	}
	// Two accounts of three are at cost 4: about 2000 of 3000 names, with
	// a margin of more than five standard deviations (26).
	if counts[4] < 1850 || counts[4] > 2150 || counts[4]+counts[5] != names {
		t.Fatalf("costs drawn %v, want about 2000 at 4 and 1000 at 5", counts)
	}
	// Accounts pay their own cost.
	if a.Cost([]byte("A")) != 4 || a.Cost([]byte("c")) != 5 {
		t.Fatal("an account's cost is not its entry's")
	}

	tab, err = Parse(strings.NewReader(""), "users")
	if err != nil {
		t.Fatal(err)
	}
	if h, c := tab.dummyFor(12345); c != 5 || mustCost(t, h) != 5 {
		t.Fatalf("empty table: dummy cost %d, want htpasswd's default 5", c)
	}
}

func mustCost(t *testing.T, hash []byte) int {
	t.Helper()
	c, err := bcrypt.Cost(hash)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
