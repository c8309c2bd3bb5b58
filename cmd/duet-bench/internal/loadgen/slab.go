package loadgen

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
)

// An open TCP connection costs memory the process's RSS does not show:
// the kernel's socket, its inode, its file, its dentry and the epoll
// entry that watches it, each from a slab cache of its own. The idle run
// reads /proc/slabinfo before connecting and again while every pair is
// held, and reports what these caches grew by.
//
// Client and server are on the same machine, so each connection is two
// sockets, one at each end, and the figures are for both: the client's
// end holds the same socket, inode, file, dentry and epoll entry as the
// server's (the Go runtime's poller watches it as gnet's epoll watches
// the server's), so about half of each figure is the server's.
//
// The caches below are the ones that moved by one or two objects per
// connection when 5,000 loopback connections were opened on this
// project's benchmark machine (Linux 6.18); the others moved by less than
// a tenth of an object per connection. A kernel that merges a cache into
// another of the same size lists it under the other's name, or not at
// all (tcp_bind_bucket here); a cache missing from slabinfo is left out.
// dentry and filp also move with everything else the machine opens and
// closes meanwhile, so on a busy machine they are the noisiest. One such
// thing was seen to move them by more than the connections themselves:
// a process listing other processes' open files (/proc/PID/fd, as ss -p
// and monitoring tools do) makes a proc inode, a dentry and its security
// blob for each open descriptor, and with 36,000 open that doubled the
// dentries. Those entries are counted in proc_inode_cache, so their
// number is taken out of dentry and lsm_inode_cache and reported apart.
var socketSlabCaches = []string{
	"TCP",              // struct tcp_sock, one per socket
	"sock_inode_cache", // the socket's inode
	"filp",             // the open file
	"dentry",           // the socket file's dentry
	"eventpoll_epi",    // an epoll entry per socket and epoll instance
	"ep_head",          // the list of epoll entries of a file
	"lsm_inode_cache",  // security module state of the inode
	"lsm_file_cache",   // security module state of the file
	"tcp_bind_bucket",  // a port bound by a client socket
	"tcp_bind2_bucket", // the same, by address and port
}

// procInodeCache holds the inodes of /proc entries (see above).
const procInodeCache = "proc_inode_cache"

// slabCache is one line of /proc/slabinfo.
type slabCache struct {
	active     int64 // objects in use
	objectSize int64 // bytes per object
}

// parseSlabinfo reads /proc/slabinfo, version 2.x: a version line, a
// header line starting with '#', then one line per cache whose first four
// fields are its name, active objects, total objects and object size.
func parseSlabinfo(data []byte) (map[string]slabCache, error) {
	lines := bytes.Split(data, []byte("\n"))
	if !bytes.HasPrefix(lines[0], []byte("slabinfo - version: 2.")) {
		return nil, fmt.Errorf("unknown slabinfo format %q", lines[0])
	}
	caches := make(map[string]slabCache)
	for _, line := range lines[1:] {
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		f := bytes.Fields(line)
		if len(f) < 4 {
			return nil, fmt.Errorf("short slabinfo line %q", line)
		}
		active, err1 := strconv.ParseInt(string(f[1]), 10, 64)
		size, err2 := strconv.ParseInt(string(f[3]), 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("slabinfo line %q: %w", line, err)
		}
		caches[string(f[0])] = slabCache{active: active, objectSize: size}
	}
	return caches, nil
}

// parseSockstatTCPPages reads the TCP line of /proc/net/sockstat and
// returns its "mem" field: pages the kernel holds for TCP socket buffers.
func parseSockstatTCPPages(data []byte) (int64, error) {
	for line := range bytes.SplitSeq(data, []byte("\n")) {
		rest, ok := bytes.CutPrefix(line, []byte("TCP: "))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		for i := 0; i+1 < len(f); i += 2 {
			if string(f[i]) == "mem" {
				return strconv.ParseInt(string(f[i+1]), 10, 64)
			}
		}
		return 0, fmt.Errorf("no mem field in %q", line)
	}
	return 0, errors.New("no TCP line")
}

// kernelReading is the socket slab caches and TCP buffer pages at one
// moment.
type kernelReading struct {
	caches    map[string]slabCache
	tcpPages  int64
	pageBytes int64
}

func readKernelMemory(fsys fs.FS) (kernelReading, error) {
	slab, err := fs.ReadFile(fsys, "slabinfo")
	if err != nil {
		return kernelReading{}, err
	}
	caches, err := parseSlabinfo(slab)
	if err != nil {
		return kernelReading{}, err
	}
	sockstat, err := fs.ReadFile(fsys, "net/sockstat")
	if err != nil {
		return kernelReading{}, err
	}
	pages, err := parseSockstatTCPPages(sockstat)
	if err != nil {
		return kernelReading{}, fmt.Errorf("sockstat: %w", err)
	}
	return kernelReading{caches: caches, tcpPages: pages, pageBytes: int64(os.Getpagesize())}, nil
}

// kernelMemoryBetween reports what the socket caches and TCP buffers grew
// by between two readings, per connection.
func kernelMemoryBetween(before, after kernelReading, connections int) *KernelMemoryReport {
	k := &KernelMemoryReport{Connections: connections}
	if b, ok := before.caches[procInodeCache]; ok {
		k.ProcInodes = max(after.caches[procInodeCache].active-b.active, 0)
	}
	for _, name := range socketSlabCaches {
		b, okB := before.caches[name]
		a, okA := after.caches[name]
		if !okB || !okA {
			continue
		}
		d := SlabDelta{Name: name, ObjectBytes: a.objectSize, Objects: a.active - b.active}
		if name == "dentry" || name == "lsm_inode_cache" {
			d.Objects -= k.ProcInodes
		}
		d.Bytes = d.Objects * a.objectSize
		if connections > 0 {
			d.ObjectsPerConnection = float64(d.Objects) / float64(connections)
		}
		k.Caches = append(k.Caches, d)
		k.SlabBytes += d.Bytes
	}
	k.SocketBufferBytes = (after.tcpPages - before.tcpPages) * after.pageBytes
	if connections > 0 {
		k.SlabPerConnectionBytes = float64(k.SlabBytes) / float64(connections)
	}
	return k
}
