package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"duet/engine"
	"duet/engine/auth"
	"duet/engine/hub"
)

// A single node's restart that keeps its conversations
// (resume.state_file, docs/RESUME.md). On SIGTERM the node drains as a
// node of a cluster does: every client is told to reconnect and resume,
// and its session goes away instead of ending. Then the sessions are
// written down, whole (hub.Snapshot, hub.WriteState), to the state
// file, which the next process reads, deletes and takes up
// (hub.Restore) before it listens. The time between counts against each
// session's resume window. The file holds what the process held in
// memory (names, tokens, the messages kept for resumes, in the clear),
// so it is written 0600 and lives only from one process to the next.

// checkStateDir makes sure the state file can be written where it is to
// be, so that a directory that is missing or not writable is found at
// start, and not at the stop that would need it; and that path names a
// file, since the stop renames the new state over it and a start deletes
// one it cannot read: a directory there (resume.state_file:
// /var/lib/duetd/, the unit's StateDirectory) would lose every session
// at the stop.
func checkStateDir(path string) error {
	if strings.HasSuffix(path, string(filepath.Separator)) {
		return fmt.Errorf("resume.state_file: %s ends in %q, so it names a directory; name a file in it, such as %s",
			path, string(filepath.Separator), filepath.Join(path, "sessions"))
	}
	if st, err := os.Stat(path); err == nil && !st.Mode().IsRegular() {
		if st.IsDir() {
			return fmt.Errorf("resume.state_file: %s is a directory; name a file in it, such as %s", path, filepath.Join(path, "sessions"))
		}
		return fmt.Errorf("resume.state_file: %s is not a regular file (%v); name a file duetd alone writes", path, st.Mode().Type())
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".duetd-state-check-*")
	if err != nil {
		// The example configuration names the directory the systemd unit
		// makes, which a start from a shell, or a unit of one's own, may
		// not have: say both ways out.
		return fmt.Errorf("resume.state_file: cannot write beside %s: %w; create %s writable by the user duetd runs as "+
			"(the systemd unit makes /var/lib/duetd: StateDirectory), or set resume.state_file: \"\" (DUETD_RESUME_STATE_FILE=) "+
			"to end every session at a stop", path, err, filepath.Dir(path))
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// removeStaleState removes what a process killed while writing the
// state left beside path (writeFileSync's temporary file), with what its
// users said in it: no process is to read it. It runs at start, when no
// other process writes there (check-config does not call it).
func removeStaleState(path string) {
	old, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".duetd-state-*"))
	for _, name := range old {
		if name != filepath.Clean(path) {
			_ = os.Remove(name)
		}
	}
}

// The state file starts with the line authLine and the auth.mode it was
// written under ("open" or "accounts"), then the hub's state. A session
// of open mode proved no password: in accounts mode none of them is
// taken up, or whoever took a name before the switch would keep it from
// its account's owner. A file with no such line (written before it was
// added) is taken as written in the mode of the process that reads it.
const authLine = "duetd-auth "

// restoreState takes up on h the sessions the process before this one
// left in path, if it left any; in accounts mode (accounts not nil) only
// those of accounts in the users file now, and none from a file written
// in open mode. A file that cannot be read is
// logged and deleted (if it is a regular file): the node starts without
// them. One that cannot be
// opened is logged and left for the operator.
//
// It reports whether it took the sessions up: the caller then deletes the
// file (doneWithState) once the node listens, and not before, so that a
// start that fails to bind leaves them for the next one. No client can
// resume one before the node listens, so a start that dies in between
// hands nothing to the next process that a client has taken since.
func restoreState(path string, h *hub.Hub, accounts *auth.Accounts, log *zap.Logger) (took bool) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false
	}
	if err != nil {
		log.Error("cannot open the state file; its sessions are not taken up", zap.String("file", path), zap.Error(err))
		return false
	}
	defer f.Close()
	if why := notOwnState(f); why != "" {
		// Whoever could write it could hand themselves any session in
		// it, in accounts mode a login without the password: left for
		// the operator, and replaced by the next stop's.
		log.Error("the state file is not one this process's user alone could have written; its sessions are not taken up",
			zap.String("file", path), zap.String("why", why))
		return false
	}
	unreadable := func(err error) bool {
		log.Error("cannot read the state file; its sessions are lost", zap.String("file", path), zap.Error(err))
		// Only a file duetd could have written is deleted: never a
		// directory, a device or a socket named by mistake.
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			_ = os.Remove(path)
		}
		return false
	}
	r := bufio.NewReader(f)
	mode := ""
	if head, _ := r.Peek(len(authLine)); string(head) == authLine {
		line, err := r.ReadString('\n')
		if err != nil {
			return unreadable(err)
		}
		mode = strings.TrimSuffix(strings.TrimPrefix(line, authLine), "\n")
	}
	at, parked, err := hub.ReadState(r)
	if err != nil {
		return unreadable(err)
	}
	if accounts != nil {
		kept := parked[:0]
		for _, p := range parked {
			if mode != "open" && accounts.Has(p.Name) {
				kept = append(kept, p)
			}
		}
		if dropped := len(parked) - len(kept); dropped > 0 {
			log.Warn("sessions in the state file that are not accounts now are not taken up", zap.String("file", path),
				zap.Int("sessions", dropped), zap.Bool("written_in_open_mode", mode == "open"))
		}
		parked = kept
	}
	away := max(time.Since(at), 0)
	for _, p := range parked {
		p.Age(away)
	}
	n := h.Restore(parked)
	log.Info("took up the sessions the previous process kept", zap.String("file", path),
		zap.Int("sessions", n), zap.Int("refused", len(parked)-n), zap.Duration("kept_for", away))
	return true
}

// notOwnState says why the open state file f is not one only this
// process's user could have written, or "" if it is: duetd writes it
// 0600, as that user. A file another user owns, or that others may
// write, may have been planted (in a directory others can write to) or
// changed by someone else.
func notOwnState(f *os.File) string {
	st, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	if perm := st.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Sprintf("its mode %#o lets others write it; duetd writes it 0600", perm)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
		return fmt.Sprintf("it is owned by uid %d, and duetd runs as uid %d", sys.Uid, os.Geteuid())
	}
	return ""
}

// doneWithState deletes the state file whose sessions restoreState took
// up, once the node listens: from then on its clients resume here, and
// no other process is to take them up.
func doneWithState(path string, log *zap.Logger) {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		log.Error("cannot delete the state file; a restart would take up its sessions again", zap.String("file", path), zap.Error(err))
	}
}

// saveState drains srv over spread, telling every client to reconnect
// and resume, and writes the sessions of h to the state file for the
// next process, labelled with authMode. It returns what the drain did
// and how many sessions were written.
//
// authMode is the mode the sessions were logged in under, the one in
// effect since start, and not the one last loaded: auth.mode changes
// only on restart, and a file labelled "accounts" after a reload would
// have the next process hand accounts to whoever took their names
// without a password.
func saveState(ctx context.Context, path string, srv *engine.Server, h *hub.Hub, spread time.Duration, authMode string) (engine.Drained, int, error) {
	told := srv.Drain(ctx, spread, nil)
	parked := h.Snapshot()
	err := writeFileSync(path, func(w io.Writer) error {
		if _, err := io.WriteString(w, authLine+authMode+"\n"); err != nil {
			return err
		}
		return hub.WriteState(w, time.Now(), parked)
	})
	if err != nil {
		return told, 0, fmt.Errorf("resume.state_file: %w", err)
	}
	return told, len(parked), nil
}

// writeFileSync writes to path, 0600, what write writes, whole or not
// at all: to a file beside it, synced, then renamed over it, and the
// directory synced, so that a crash leaves the old file or the new one,
// never half.
func writeFileSync(path string, write func(io.Writer) error) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".duetd-state-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after the rename, there is nothing to remove
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
