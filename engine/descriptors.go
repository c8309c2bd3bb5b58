package engine

import (
	"os"
	"runtime"
	"strconv"
	"strings"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Every connection is a file descriptor, and the process has only so
// many (RLIMIT_NOFILE). gnet takes an accept that fails for want of one
// (EMFILE) for a broken listener: its main reactor stops, and the
// engine with it, dropping every connection without a word. So the
// engine admits no more connections than its share of the limit leaves
// room for, whatever limits.max_conns says, and refuses the rest as it
// refuses any connection past max_conns: with server_full.
//
// Besides the connections it admits, the engine holds descriptors of
// its own (a poller and its wake-up for each loop, the listeners), and
// sockets it has not admitted:
//
//   - A burst of accepts. gnet's main reactor accepts everything queued
//     on a listener before the loops it hands the sockets to can run
//     OnOpen and close those refused: a listener's whole accept queue,
//     its backlog and one more, which gnet sets to net.core.somaxconn
//     (4096 on Linux 5.4 and later, and up to 65535).
//   - The refused connections kept: on the web port to read their
//     request (refuseRequest), on the line port to linger after their
//     refusal (closeSocket): refusalsKeptPerAddr from each of
//     refusalsKeptAddrs addresses.
//
// Where the limit is low, those two would take most of it, and leave
// only a few connections, or none: then the kept refusals take at most
// an eighth of the room and the bursts at most a quarter, the listeners'
// backlog shortened to fit. A connection that finds the queue full is
// not lost: its client's SYN is answered when it is sent again.
//
// The cap is a margin, not a proof: a flood that keeps a listener's
// queue full while the main reactor drains it can have more sockets in
// flight, and a system-wide shortage (ENFILE) stops the engine whatever
// the process's limit. Then the sessions are handed on as at a stop
// (Server.OnFailure).

// Descriptors is the part of the process's descriptor limit the engine
// may use.
type Descriptors struct {
	// Limit is the process's RLIMIT_NOFILE, the soft one; 0 caps nothing
	// (a test, or an embedder that sees to it).
	Limit int
	// Elsewhere is what the process holds outside the engine at most:
	// standard input and output, the Go runtime's poller, the admin
	// listener and its connections, Redis, files opened for a moment,
	// and a margin.
	Elsewhere int
}

// FileLimit is the process's descriptor limit, the soft one, or 0 when
// it cannot be read or is unlimited.
func FileLimit() int {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == unix.RLIM_INFINITY || rl.Cur > 1<<31 {
		return 0
	}
	return int(rl.Cur)
}

// fileShare is how the engine divides what a Descriptors leaves it.
type fileShare struct {
	conns        int // connections admitted at most; 0: no cap
	backlog      int // each listener's backlog; 0 leaves gnet's
	refusalAddrs int // addresses whose refused web connections are kept
	// besides is what the engine needs beside its connections, and
	// the process elsewhere, with nothing shortened to fit.
	besides int
}

// shareFiles divides d among a burst of accepts for each listener, the
// refused web connections kept (with web), and the connections admitted,
// for an engine of loops event loops and its main reactor. somaxconn is
// the backlog gnet gives each listener. However low the limit, at least
// one connection is admitted, one address's refusals kept and a backlog
// of one left: the caller warns of a limit that leaves no more.
func shareFiles(d Descriptors, loops, listeners int, web bool, somaxconn int) fileShare {
	share := fileShare{refusalAddrs: refusalsKeptAddrs}
	if d.Limit <= 0 {
		return share
	}
	// An epoll descriptor and an eventfd for each loop and the main
	// reactor, the listeners, and one of them duplicated for a moment
	// (DupListener).
	own := 2*(loops+1) + listeners + 1
	room := d.Limit - d.Elsewhere - own
	kept := 0
	share.besides = d.Elsewhere + own + listeners*(somaxconn+1)
	if web {
		share.besides += refusalsKeptAddrs * refusalsKeptPerAddr
		share.refusalAddrs = max(min(refusalsKeptAddrs, room/8/refusalsKeptPerAddr), 1)
		kept = share.refusalAddrs * refusalsKeptPerAddr
	}
	backlog := somaxconn
	if burst := room / 4 / listeners; burst < somaxconn+1 {
		backlog = max(burst-1, 1)
		share.backlog = backlog
	}
	share.conns = max(room-kept-listeners*(backlog+1), 1)
	return share
}

// somaxconn is the backlog gnet gives a listener: net.core.somaxconn, at
// most 65535, which the kernel keeps in 16 bits.
func somaxconn() int {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err != nil {
		return unix.SOMAXCONN
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n <= 0 {
		return unix.SOMAXCONN
	}
	return min(n, 1<<16-1)
}

// eventLoops is how many loops gnet runs: Options.Loops, or one per CPU.
func eventLoops(opts Options) int {
	if opts.Loops > 0 {
		return opts.Loops
	}
	return runtime.NumCPU()
}

// MaxConns is the most connections the engine admits: limits.max_conns,
// or fewer when the descriptor limit leaves no room for as many.
func (s *Server) MaxConns() int {
	n := s.lim().MaxConns
	if s.files.conns > 0 {
		n = min(n, s.files.conns)
	}
	return n
}

// ConnsRoom is how many connections the descriptor limit leaves room
// for, 0 when Options.Descriptors set none.
func (s *Server) ConnsRoom() int { return s.files.conns }

// Backlog is each listener's backlog when shortened to fit the
// descriptor limit, 0 when it is gnet's (net.core.somaxconn).
func (s *Server) Backlog() int { return s.files.backlog }

// FilesFor is the descriptor limit that leaves room for n connections
// with nothing shortened to fit: what to raise the limit to.
func (s *Server) FilesFor(n int) int { return n + s.files.besides }

// listenerBacklogs shortens the listeners' backlog to the engine's share
// (shareFiles), if it shortens it. listen(2) on a socket that listens
// already sets its backlog again.
func (s *Server) listenerBacklogs() {
	if s.files.backlog <= 0 {
		return
	}
	for _, listen := range []string{s.opts.TCPListen, s.opts.WSListen} {
		if listen == "" {
			continue
		}
		fd, err := s.eng.DupListener("tcp", listen)
		if err == nil {
			err = unix.Listen(fd, s.files.backlog)
			_ = unix.Close(fd)
		}
		if err != nil {
			s.log.Warn("cannot shorten the listener's backlog to fit the descriptor limit; a burst of connections may exhaust it",
				zap.String("listen", listen), zap.Int("backlog", s.files.backlog), zap.Error(err))
		}
	}
}
