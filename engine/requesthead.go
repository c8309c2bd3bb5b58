package engine

import (
	"bufio"
	"bytes"
	"net/http"

	"duet/proto/wsframe"
)

// requestHead is what the web port makes of the bytes at the front of a
// connection that has not upgraded: nothing yet, an error to answer, or
// a request.
type requestHead struct {
	// end is the length of the head, terminating blank line included;
	// zero while it is incomplete.
	end int
	// status, when not zero, is the HTTP error to answer before closing
	// (400 or 431); used is then how much of the input it accounts for.
	status int
	used   int
	req    *http.Request
}

// parseRequestHead reads one HTTP request head from the front of buf. It
// is pure, so it can be fuzzed on its own: whatever buf holds, it
// returns a request, an error status, or asks for more bytes while buf
// is still within maxRequestHead.
func parseRequestHead(buf []byte) requestHead {
	end := wsframe.HeadEnd(buf)
	if end == 0 || end > maxRequestHead {
		if end > maxRequestHead || len(buf) > maxRequestHead {
			return requestHead{status: http.StatusRequestHeaderFieldsTooLarge, used: len(buf)}
		}
		return requestHead{}
	}
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(buf[:end])))
	if err != nil {
		return requestHead{end: end, status: http.StatusBadRequest, used: end}
	}
	return requestHead{end: end, req: req}
}
