package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"os"
	"sync/atomic"

	"golang.org/x/crypto/bcrypt"
)

// Accounts is the table of accounts loaded from an htpasswd file. Verify
// may run on any number of goroutines while Reload swaps in a new table:
// each check reads one table, old or new, never a mix.
type Accounts struct {
	path  string
	table atomic.Pointer[Table]
	// drawKey keys the draw that fixes the cost a name that is not an
	// account is checked at (see Verify). It is secret and lasts as long
	// as the process, across reloads.
	drawKey [32]byte
}

// Load reads the htpasswd file at path. A file duet cannot use is an
// error naming the line and user, so the daemon refuses to start rather
// than run with accounts nobody can log in to.
func Load(path string) (*Accounts, error) {
	t, err := parseFile(path)
	if err != nil {
		return nil, err
	}
	a := newAccounts(t)
	a.path = path
	return a, nil
}

// NewAccounts wraps a table already parsed, for tests and embedders;
// Reload on it reads nothing and keeps the table.
func NewAccounts(t *Table) *Accounts { return newAccounts(t) }

func newAccounts(t *Table) *Accounts {
	a := &Accounts{}
	rand.Read(a.drawKey[:]) // never fails (crypto/rand panics instead)
	a.table.Store(t)
	return a
}

func parseFile(path string) (*Table, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(f, path)
}

// Reload reads the file again. When the new file is bad, the error says
// why and the old table stays in use, so a typo during an edit does not
// lock everyone out. Logins already being checked finish against the
// table they started with.
func (a *Accounts) Reload() error {
	if a.path == "" {
		return nil
	}
	t, err := parseFile(a.path)
	if err != nil {
		return err
	}
	a.table.Store(t)
	return nil
}

// Path is the file the accounts come from.
func (a *Accounts) Path() string { return a.path }

// Len is the number of accounts in the current table.
func (a *Accounts) Len() int { return a.table.Load().Len() }

// Has reports whether name (compared without regard to case) is an
// account of the current table. It checks no password: it is for what
// was proved before, such as a session kept across a restart.
func (a *Accounts) Has(name string) bool {
	_, known := a.table.Load().byKey[fold(name)]
	return known
}

// Verify reports whether password is the password of the account name
// (compared without regard to case), and returns the account's name as
// the file spells it. It costs one bcrypt comparison whether or not the
// account exists, so it must not run on an event loop.
//
// A name that is not an account must take as long to refuse as one that
// is, or timing would tell which names exist. When every entry has one
// cost that is simple: compare against any entry's hash. When costs are
// mixed (2 ms and 480 ms, say), no single cost will do: whichever is
// chosen, the accounts of the other costs stand out. So each name that is
// not an account is given a cost of its own, drawn from the file's costs
// in their proportions by a keyed hash of the name: the same name always
// takes the same time, as an account would, and across names the times
// are spread as the accounts' are. Without the key (random, kept secret
// for the life of the process) nobody can tell which cost a name drew.
func (a *Accounts) Verify(name, password []byte) (account string, ok bool) {
	t := a.table.Load()
	e, known := t.byKey[fold(string(name))]
	hash := e.hash
	if !known {
		hash, _ = t.dummyFor(a.draw(name))
	}
	// bcrypt compares the hashes in constant time itself; the outcome of
	// a comparison against the dummy hash is thrown away.
	match := bcrypt.CompareHashAndPassword(hash, password) == nil
	if !known || !match {
		return "", false
	}
	return e.name, true
}

// Cost is the bcrypt cost Verify will pay for name: its entry's, or the
// one a name that is not an account draws. The checker pool uses it to
// tell how long a check will take.
func (a *Accounts) Cost(name []byte) int {
	t := a.table.Load()
	if e, known := t.byKey[fold(string(name))]; known {
		return e.cost
	}
	_, cost := t.dummyFor(a.draw(name))
	return cost
}

// draw is the number that fixes which cost name is checked at when it is
// not an account: a keyed hash of the name as it folds.
func (a *Accounts) draw(name []byte) uint64 {
	m := hmac.New(sha256.New, a.drawKey[:])
	m.Write([]byte(fold(string(name))))
	return binary.BigEndian.Uint64(m.Sum(nil))
}
