package loadgen

import (
	"os"
	"testing"
)

// The fixtures under testdata/slab are /proc/slabinfo (trimmed to the
// socket caches and a few others) and /proc/net/sockstat, read before
// 2,000 idle connections to a duetd were opened and while they were
// held. Meanwhile something listed the open descriptors of the two
// processes, as a monitor does, and 4,007 /proc inodes appeared.

func TestParseSlabinfo(t *testing.T) {
	data, err := os.ReadFile("testdata/slab/open/slabinfo")
	if err != nil {
		t.Fatal(err)
	}
	caches, err := parseSlabinfo(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(caches) != 15 {
		t.Errorf("%d caches, want 15", len(caches))
	}
	if c := caches["TCP"]; c != (slabCache{active: 4069, objectSize: 2368}) {
		t.Errorf("TCP: %+v", c)
	}
	if c := caches["kmalloc-192"]; c != (slabCache{active: 6531, objectSize: 192}) {
		t.Errorf("kmalloc-192: %+v", c)
	}
	for _, bad := range []string{
		"",
		"slabinfo - version: 1.1\nTCP 1 1 2368 13 8\n",
		"slabinfo - version: 2.1\nTCP 1 1\n",
		"slabinfo - version: 2.1\nTCP x 1 2368 13 8\n",
	} {
		if _, err := parseSlabinfo([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParseSockstat(t *testing.T) {
	data, err := os.ReadFile("testdata/slab/open/net/sockstat")
	if err != nil {
		t.Fatal(err)
	}
	if pages, err := parseSockstatTCPPages(data); err != nil || pages != 224 {
		t.Errorf("TCP pages %d, %v", pages, err)
	}
	for _, bad := range []string{"", "UDP: inuse 0 mem 0\n", "TCP: inuse 9 orphan 0\n", "TCP: inuse 9 mem x\n"} {
		if _, err := parseSockstatTCPPages([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestKernelMemoryFromFixtures(t *testing.T) {
	before, err := readKernelMemory(os.DirFS("testdata/slab/before"))
	if err != nil {
		t.Fatal(err)
	}
	open, err := readKernelMemory(os.DirFS("testdata/slab/open"))
	if err != nil {
		t.Fatal(err)
	}
	open.tcpPages += 10 // as if the sockets held some buffers
	k := kernelMemoryBetween(before, open, 2000)
	want := []SlabDelta{
		{"TCP", 2368, 4000, 2, 4000 * 2368},
		{"sock_inode_cache", 832, 3937, 1.9685, 3937 * 832},
		{"filp", 192, 4113, 2.0565, 4113 * 192},
		// 8,141 more dentries and 7,929 more inode security blobs,
		// 4,007 of them for the /proc inodes something else made.
		{"dentry", 192, 4134, 2.067, 4134 * 192},
		{"eventpoll_epi", 128, 7461, 3.7305, 7461 * 128},
		{"ep_head", 24, 3799, 1.8995, 3799 * 24},
		{"lsm_inode_cache", 32, 3922, 1.961, 3922 * 32},
		{"lsm_file_cache", 24, 4063, 2.0315, 4063 * 24},
	}
	if len(k.Caches) != len(want) {
		t.Fatalf("caches %+v", k.Caches)
	}
	var total int64
	for i, w := range want {
		got := k.Caches[i]
		if got.Name != w.Name || got.ObjectBytes != w.ObjectBytes || got.Objects != w.Objects ||
			got.Bytes != w.Bytes || !near(got.ObjectsPerConnection, w.ObjectsPerConnection) {
			t.Errorf("cache %d: got %+v, want %+v", i, got, w)
		}
		total += w.Bytes
	}
	if total != 15600208 || k.SlabBytes != total || !near(k.SlabPerConnectionBytes, 15600208.0/2000) {
		t.Errorf("slab %d bytes, %v per connection; want 15600208 and %v", k.SlabBytes, k.SlabPerConnectionBytes, 15600208.0/2000)
	}
	if k.ProcInodes != 4007 {
		t.Errorf("proc inodes %d, want 4007", k.ProcInodes)
	}
	if k.SocketBufferBytes != 10*int64(os.Getpagesize()) || k.Connections != 2000 {
		t.Errorf("socket buffers %d bytes, %d connections", k.SocketBufferBytes, k.Connections)
	}
}

func TestReadKernelMemoryLive(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("/proc/slabinfo is readable by root only")
	}
	r, err := readKernelMemory(os.DirFS("/proc"))
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := r.caches["TCP"]; !ok || c.objectSize < 1000 {
		t.Errorf("no plausible TCP cache: %+v", c)
	}
}
