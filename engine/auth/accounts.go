package auth

import (
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
}

// Load reads the htpasswd file at path. A file duet cannot use is an
// error naming the line and user, so the daemon refuses to start rather
// than run with accounts nobody can log in to.
func Load(path string) (*Accounts, error) {
	t, err := parseFile(path)
	if err != nil {
		return nil, err
	}
	a := &Accounts{path: path}
	a.table.Store(t)
	return a, nil
}

// NewAccounts wraps a table already parsed, for tests and embedders;
// Reload on it reads nothing and keeps the table.
func NewAccounts(t *Table) *Accounts {
	a := &Accounts{}
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

// Verify reports whether password is the password of the account name
// (compared without regard to case), and returns the account's name as
// the file spells it. It costs one bcrypt comparison whether or not the
// account exists, so it must not run on an event loop.
func (a *Accounts) Verify(name, password []byte) (account string, ok bool) {
	t := a.table.Load()
	e, known := t.byKey[fold(string(name))]
	hash := e.hash
	if !known {
		hash = t.dummy
	}
	// bcrypt compares the hashes in constant time itself; the outcome of
	// a comparison against the dummy hash is thrown away.
	match := bcrypt.CompareHashAndPassword(hash, password) == nil
	if !known || !match {
		return "", false
	}
	return e.name, true
}
