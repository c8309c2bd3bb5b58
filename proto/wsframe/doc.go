// Package wsframe is the server side of RFC 6455 WebSocket as pure
// functions over byte slices.
//
// duetd runs on gnet event loops, which hand the engine whatever bytes have
// arrived: an HTTP request head or a frame may be split across reads, and
// one read may carry several frames. Nothing here reads from or writes to a
// connection. The engine accumulates bytes until a request head is
// complete (package httphead says when), passes it to Upgrade, then feeds
// the inbound buffer to Reader.Next and discards the n bytes each call
// consumed.
//
// The types are those of github.com/gobwas/ws (ws.Header, ws.OpCode,
// ws.StatusCode), and gobwas decides the rules it already knows: the
// handshake (ws.Upgrader over an in-memory reader and writer, with what
// it leaves unchecked checked here: one Host, one Origin, one
// Sec-WebSocket-Key and that key the base64 of 16 bytes), the header
// rules (ws.CheckHeader) and close codes (ws.CheckCloseFrameData). Frame
// headers are parsed and written here by hand because gobwas reads and
// writes them through io interfaces, which allocates on every frame; and
// payloads are unmasked here, eight bytes at a time, because the same pass
// finds whether a text is ASCII, which spares it utf8.Valid.
//
// Aliasing: a message that arrived in one frame is unmasked in place, and
// its Payload is a sub-slice of the buffer given to Next. A fragmented
// message is assembled in the Reader's own buffer. Either way the payload is
// valid only until the next call to Next or until the caller reuses the
// input buffer, whichever comes first; a consumer that keeps it must copy.
//
// Writing: server frames are appended to a caller's buffer and never
// allocate once it has room. A payload already in hand goes through
// AppendFrame. An event encoded straight into the output buffer, whose
// length is unknown until it is encoded, goes between StartFrame, which
// reserves the largest header, and FinishFrame, which writes the real
// header and moves the payload up against it (one copy of the payload).
// When the length is known first, AppendTextHeader followed by the payload
// avoids even that copy.
//
// The header code serves duet's own clients too (the load generator in
// cmd/duet-bench): ParseHeader reads a header from either side, and
// AppendMaskedHeader writes a client's, so frame headers are read and
// written in this one place.
package wsframe
