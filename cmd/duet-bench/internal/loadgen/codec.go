package loadgen

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/gobwas/ws"

	"duet/proto/wsframe"
)

// eventKind says what one line or frame from the server meant to the load
// generator. It is deliberately coarser than duet's own events: the
// generator only needs to know how far setup got and what arrived.
type eventKind uint8

const (
	evNotice   eventKind = iota // needs no action: greeting, hello, other notices
	evWelcome                   // logged in; text is the token
	evPaired                    // paired with the peer (either side)
	evMessage                   // text is a relayed message text
	evError                     // code is the server's error code
	evPeerLeft                  // the peer is gone
	evPing                      // WebSocket ping; text is its payload
	evClosed                    // WebSocket close frame
	evOversize                  // a line or frame too large to be ours
)

var eventNames = [...]string{
	evNotice:   "notice",
	evWelcome:  "welcome",
	evPaired:   "paired",
	evMessage:  "message",
	evError:    "error",
	evPeerLeft: "peer_left",
	evPing:     "ping",
	evClosed:   "close",
	evOversize: "oversize",
}

func (k eventKind) String() string {
	if int(k) < len(eventNames) {
		return eventNames[k]
	}
	return "unknown"
}

// event is one decoded server line or frame. Its slices alias the
// connection's read buffer and are valid only until the next read.
type event struct {
	kind eventKind
	text []byte
	code []byte
}

// codec turns the load generator's requests into bytes for one protocol
// and the server's bytes back into events. A codec belongs to one
// connection: the WebSocket codec keeps masking and reassembly state.
type codec interface {
	appendLogin(dst []byte, name string) []byte
	appendConnect(dst []byte, token []byte) []byte
	appendMessage(dst []byte, seq uint64, stamp int64, padding []byte) []byte
	appendPong(dst []byte, payload []byte) []byte
	// read blocks until the next event.
	read(br *bufio.Reader) (event, error)
	// messageBuffered reports whether read can return an event without
	// touching the socket. The reader publishes progress and refills its
	// peer's window only when it cannot, which batches that work per
	// socket read instead of per message.
	messageBuffered(br *bufio.Reader) bool
}

// errOversize ends a connection whose server sent a frame far larger than
// anything the benchmark sends.
var errOversize = errors.New("frame larger than 16 MiB")

const maxFrameSize = 16 << 20

// lineCodec speaks duet's line protocol: commands and messages are lines
// ending in "\n", the server's lines end in "\r\n".
type lineCodec struct{}

func (lineCodec) appendLogin(dst []byte, name string) []byte {
	dst = append(dst, "/login "...)
	dst = append(dst, name...)
	return append(dst, '\n')
}

func (lineCodec) appendConnect(dst []byte, token []byte) []byte {
	dst = append(dst, "/connect "...)
	dst = append(dst, token...)
	return append(dst, '\n')
}

func (lineCodec) appendMessage(dst []byte, seq uint64, stamp int64, padding []byte) []byte {
	dst = appendText(dst, seq, stamp, padding)
	return append(dst, '\n')
}

func (lineCodec) appendPong(dst []byte, _ []byte) []byte { return dst }

func (lineCodec) read(br *bufio.Reader) (event, error) {
	line, err := readLine(br)
	if err != nil {
		return event{}, err
	}
	if line == nil {
		return event{kind: evOversize}, nil
	}
	return classifyLine(line), nil
}

func (lineCodec) messageBuffered(br *bufio.Reader) bool { return lineBuffered(br) }

// readLine returns the next line without its line ending, or nil for a
// line longer than the read buffer, which it skips.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		for err == bufio.ErrBufferFull {
			_, err = br.ReadSlice('\n')
		}
		if err != nil {
			return nil, err
		}
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

func lineBuffered(br *bufio.Reader) bool {
	n := br.Buffered()
	if n == 0 {
		return false
	}
	b, _ := br.Peek(n)
	return bytes.IndexByte(b, '\n') >= 0
}

var (
	youAreConnectedWith = []byte("you are connected with ")
	youAre              = []byte("you are ")
	yourTokenIs         = []byte(", your token is ")
	isConnected         = []byte(" is connected")
	leftWord            = []byte("left")
)

// classifyLine reads one server line of the line protocol:
//
//	<NAME> text                          a message from the peer
//	! code: text                         an error
//	* you are NAME, your token is TOKEN  logged in
//	* you are connected with OWNER       paired (connector's side)
//	* CONNECTOR is connected             paired (owner's side)
//	* NAME left; ...                     the peer is gone
//	* anything else                      a notice
func classifyLine(line []byte) event {
	switch {
	case len(line) > 0 && line[0] == '<':
		if i := bytes.Index(line, []byte("> ")); i > 0 {
			return event{kind: evMessage, text: line[i+2:]}
		}
	case bytes.HasPrefix(line, []byte("! ")):
		rest := line[2:]
		if i := bytes.IndexByte(rest, ':'); i >= 0 {
			rest = rest[:i]
		}
		return event{kind: evError, code: rest}
	case bytes.HasPrefix(line, []byte("* ")):
		rest := line[2:]
		if bytes.HasPrefix(rest, youAreConnectedWith) {
			return event{kind: evPaired}
		}
		if bytes.HasPrefix(rest, youAre) {
			if i := bytes.Index(rest, yourTokenIs); i >= 0 {
				token := rest[i+len(yourTokenIs):]
				if j := bytes.IndexAny(token, " .;,"); j >= 0 {
					token = token[:j]
				}
				return event{kind: evWelcome, text: token}
			}
		}
		if bytes.HasSuffix(rest, isConnected) {
			return event{kind: evPaired}
		}
		if _, after, ok := bytes.Cut(rest, []byte(" ")); ok && bytes.HasPrefix(after, leftWord) {
			return event{kind: evPeerLeft}
		}
	}
	return event{kind: evNotice}
}

// bareCodec speaks to the bare relay: no commands, every line is a
// message text and arrives exactly as it was sent.
type bareCodec struct{}

func (bareCodec) appendLogin(dst []byte, _ string) []byte   { return dst }
func (bareCodec) appendConnect(dst []byte, _ []byte) []byte { return dst }
func (bareCodec) appendPong(dst []byte, _ []byte) []byte    { return dst }
func (bareCodec) messageBuffered(br *bufio.Reader) bool     { return lineBuffered(br) }

func (bareCodec) appendMessage(dst []byte, seq uint64, stamp int64, padding []byte) []byte {
	dst = appendText(dst, seq, stamp, padding)
	return append(dst, '\n')
}

func (bareCodec) read(br *bufio.Reader) (event, error) {
	line, err := readLine(br)
	if err != nil {
		return event{}, err
	}
	if line == nil {
		return event{kind: evOversize}, nil
	}
	return event{kind: evMessage, text: line}, nil
}

// parseHello reads "hello N", the first line each bare connection sends
// so that its partner learns who it was paired with.
func parseHello(text []byte) (int, bool) {
	digits, ok := bytes.CutPrefix(text, []byte("hello "))
	if !ok || len(digits) == 0 || len(digits) > 9 {
		return 0, false
	}
	n := 0
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// WebSocket opcodes (RFC 6455 section 5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xa
)

var (
	sayPrefix = []byte(`{"type":"say","text":"`)
	saySuffix = []byte(`"}`)
)

// wsCodec speaks duet's JSON protocol over WebSocket, one object per text
// frame. It frames by hand over the connection's bufio.Reader rather than
// through wsutil so that the relay path neither allocates nor copies:
// client frames are built and masked in the send buffer, server frames are
// parsed in place in the read buffer.
type wsCodec struct {
	maskState  uint32 // xorshift state for frame masks
	assembling bool   // a fragmented message is being collected in partial
	partial    []byte
	large      []byte // payloads that do not fit in the read buffer
}

func newWSCodec(seed uint32) *wsCodec {
	if seed == 0 {
		seed = 0x9e3779b9
	}
	return &wsCodec{maskState: seed}
}

func (c *wsCodec) nextMask() [4]byte {
	// xorshift32: masks need only differ from frame to frame; the server
	// cannot tell a predictable mask from a random one.
	x := c.maskState
	x ^= x << 13
	x ^= x >> 17
	x ^= x << 5
	c.maskState = x
	var m [4]byte
	binary.LittleEndian.PutUint32(m[:], x)
	return m
}

// appendFrameHeader appends a masked client frame header for a payload of
// n bytes and returns the mask the caller must apply to the payload.
func (c *wsCodec) appendFrameHeader(dst []byte, op byte, n int) ([]byte, [4]byte) {
	mask := c.nextMask()
	return wsframe.AppendMaskedHeader(dst, ws.OpCode(op), n, mask), mask
}

func (c *wsCodec) appendFrame(dst []byte, op byte, payload []byte) []byte {
	dst, mask := c.appendFrameHeader(dst, op, len(payload))
	start := len(dst)
	dst = append(dst, payload...)
	maskPayload(dst[start:], mask)
	return dst
}

// maskPayload applies a client frame's mask to its whole payload (RFC
// 6455 section 5.3), eight bytes at a time. For the ~90-byte payloads of
// the relay it takes about half the time of ws.Cipher, whose setup pays
// off only on longer payloads; TestMaskPayload holds it to ws.Cipher.
func maskPayload(b []byte, mask [4]byte) {
	m := uint64(binary.LittleEndian.Uint32(mask[:]))
	m |= m << 32
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, binary.LittleEndian.Uint64(b)^m)
		b = b[8:]
	}
	for i := range b {
		b[i] ^= mask[i&3]
	}
}

func (c *wsCodec) appendLogin(dst []byte, name string) []byte {
	obj, _ := json.Marshal(struct {
		Type string `json:"type"`
		Name string `json:"name"`
	}{"login", name})
	return c.appendFrame(dst, opText, obj)
}

func (c *wsCodec) appendConnect(dst []byte, token []byte) []byte {
	obj, _ := json.Marshal(struct {
		Type  string `json:"type"`
		Token string `json:"token"`
	}{"connect", string(token)})
	return c.appendFrame(dst, opText, obj)
}

func (c *wsCodec) appendPong(dst []byte, payload []byte) []byte {
	return c.appendFrame(dst, opPong, payload)
}

func (c *wsCodec) appendMessage(dst []byte, seq uint64, stamp int64, padding []byte) []byte {
	n := len(sayPrefix) + MinTextSize + len(padding) + len(saySuffix)
	dst, mask := c.appendFrameHeader(dst, opText, n)
	start := len(dst)
	dst = append(dst, sayPrefix...)
	dst = appendText(dst, seq, stamp, padding)
	dst = append(dst, saySuffix...)
	maskPayload(dst[start:], mask)
	return dst
}

func (c *wsCodec) read(br *bufio.Reader) (event, error) {
	for {
		op, fin, payload, err := c.readFrame(br)
		if err != nil {
			return event{}, err
		}
		switch op {
		case opPing:
			return event{kind: evPing, text: payload}, nil
		case opPong:
			continue
		case opClose:
			return event{kind: evClosed}, nil
		case opText, opBinary:
			if fin {
				c.assembling = false
				return classifyJSON(payload), nil
			}
			c.partial = append(c.partial[:0], payload...)
			c.assembling = true
		case opContinuation:
			if !c.assembling {
				continue
			}
			c.partial = append(c.partial, payload...)
			if len(c.partial) > maxFrameSize {
				return event{}, errOversize
			}
			if fin {
				c.assembling = false
				return classifyJSON(c.partial), nil
			}
		default:
			return event{}, fmt.Errorf("websocket: unknown opcode %#x", op)
		}
	}
}

// readFrame returns the next frame's payload, unmasked. The payload
// aliases the read buffer (or c.large) until the next read.
func (c *wsCodec) readFrame(br *bufio.Reader) (op byte, fin bool, payload []byte, err error) {
	// A relayed message nearly always arrives with its whole frame
	// already in the buffer, read together with the rest of its batch:
	// take it from there with one look at the header.
	if n := br.Buffered(); n >= 2 {
		b, _ := br.Peek(n)
		if h, headerLen, err := wsframe.ParseHeader(b); err == nil && headerLen > 0 && h.Length <= int64(n-headerLen) {
			total := headerLen + int(h.Length)
			payload = b[headerLen:total]
			if h.Masked {
				ws.Cipher(payload, h.Mask, 0)
			}
			_, _ = br.Discard(total)
			return byte(h.OpCode), h.Fin, payload, nil
		}
	}
	b, err := br.Peek(2)
	if err != nil {
		return 0, false, nil, err
	}
	if b, err = br.Peek(wsframe.HeaderLen(b)); err != nil {
		return 0, false, nil, err
	}
	h, headerLen, err := wsframe.ParseHeader(b)
	if err != nil || h.Length > maxFrameSize {
		// The one header ParseHeader refuses has a length past 2^63.
		return 0, false, nil, errOversize
	}
	n := h.Length
	total := headerLen + int(n)
	if total <= br.Size() {
		if b, err = br.Peek(total); err != nil {
			return 0, false, nil, err
		}
		payload = b[headerLen:total]
		// Discard only advances the read index: payload stays valid until
		// the next read fills the buffer again.
		_, _ = br.Discard(total)
	} else {
		_, _ = br.Discard(headerLen)
		if cap(c.large) < int(n) {
			c.large = make([]byte, n)
		}
		payload = c.large[:n]
		if _, err = io.ReadFull(br, payload); err != nil {
			return 0, false, nil, err
		}
	}
	if h.Masked {
		ws.Cipher(payload, h.Mask, 0)
	}
	return byte(h.OpCode), h.Fin, payload, nil
}

func (c *wsCodec) messageBuffered(br *bufio.Reader) bool {
	b, _ := br.Peek(br.Buffered())
	h, headerLen, err := wsframe.ParseHeader(b)
	return err == nil && headerLen > 0 && int64(len(b)-headerLen) >= h.Length
}

// classifyJSON reads one server object of the JSON protocol. Relayed
// messages, the hot path, take parseMessage's shortcut, which picks the
// text out of the read buffer in place; anything else, including a
// message that needs unescaping, is parsed in full by encoding/json.
func classifyJSON(obj []byte) event {
	if text, ok := parseMessage(obj); ok {
		return event{kind: evMessage, text: text}
	}
	return classifyJSONFull(obj)
}

// The exact bytes duetd writes around a relayed message's sender and
// text (jsonproto.AppendEvent): {"type":"message","from":"NAME","text":"TEXT"},
// with ,"seq":N before the closing brace when the reader's session is
// resumable (messages are then numbered).
var (
	messageHead = []byte(`{"type":"message","from":"`)
	messageText = []byte(`","text":"`)
	messageSeq  = []byte(`","seq":`)
)

// parseMessage reads obj as duetd's relayed message object when it has
// exactly that shape, and NAME and TEXT are plain printable ASCII without
// a quote or a backslash, so that the raw bytes are already the decoded
// strings, and N, if there, is a plain decimal number. ok is false for
// anything else, which the caller hands to a full parser: the shortcut
// never decides what an unusual object means.
func parseMessage(obj []byte) (text []byte, ok bool) {
	rest, ok := bytes.CutPrefix(obj, messageHead)
	if !ok {
		return nil, false
	}
	end := bytes.IndexByte(rest, '"')
	if end < 0 || !plainJSON(rest[:end]) {
		return nil, false
	}
	if rest, ok = bytes.CutPrefix(rest[end:], messageText); !ok {
		return nil, false
	}
	// The text ends at the next quote: a quote or a backslash inside it
	// would send the object to the full parser anyway.
	end = bytes.IndexByte(rest, '"')
	if end < 0 || !plainJSON(rest[:end]) {
		return nil, false
	}
	text, rest = rest[:end], rest[end:]
	if len(rest) == 2 && rest[1] == '}' {
		return text, true
	}
	digits, ok := bytes.CutPrefix(rest, messageSeq)
	if !ok || len(digits) < 2 || digits[len(digits)-1] != '}' {
		return nil, false
	}
	digits = digits[:len(digits)-1]
	if digits[0] == '0' && len(digits) > 1 {
		return nil, false // not a JSON number
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return nil, false
		}
	}
	return text, true
}

// plainJSON reports whether every byte of s is printable ASCII other than
// '"' and '\\': a JSON string body of such bytes means itself. Eight bytes
// are checked at a time, because the shortcut runs once per message.
func plainJSON(s []byte) bool {
	for len(s) >= 8 {
		if !plainJSON8(binary.LittleEndian.Uint64(s)) {
			return false
		}
		s = s[8:]
	}
	for _, c := range s {
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// plainJSON8 is plainJSON for the eight bytes of w. Each test below sets
// a byte's high bit when that byte is one plainJSON refuses; a borrow can
// only spill past a byte that is itself refused, so the answer is exact.
func plainJSON8(w uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	below := (w - 0x20*ones) &^ w & highs // a byte < 0x20
	quote := w ^ '"'*ones
	hasQuote := (quote - ones) &^ quote & highs
	slash := w ^ '\\'*ones
	hasSlash := (slash - ones) &^ slash & highs
	del := w ^ 0x7f*ones
	hasDel := (del - ones) &^ del & highs
	return (w&highs)|below|hasQuote|hasSlash|hasDel == 0
}

// classifyJSONFull parses obj with encoding/json: anything the shortcut
// declined, including every setup reply. Member names are matched
// exactly, and a repeated member's last value counts, as in a browser's
// JSON.parse. An object that is not valid JSON is a notice, which the
// relay ignores; a message lost that way still shows as lost.
func classifyJSONFull(obj []byte) event {
	var members map[string]json.RawMessage
	if json.Unmarshal(obj, &members) != nil {
		return event{kind: evNotice}
	}
	str := func(name string) []byte {
		var s string
		if json.Unmarshal(members[name], &s) != nil {
			return nil
		}
		return []byte(s)
	}
	switch string(str("type")) {
	case "message":
		return event{kind: evMessage, text: str("text")}
	case "welcome":
		return event{kind: evWelcome, text: str("token")}
	case "paired":
		return event{kind: evPaired}
	case "error":
		return event{kind: evError, code: str("code")}
	case "peer_left":
		return event{kind: evPeerLeft}
	}
	return event{kind: evNotice}
}
