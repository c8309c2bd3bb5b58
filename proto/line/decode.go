package line

import (
	"bytes"
	"unicode/utf8"
	"unsafe"

	"duet/proto"
)

// Decode parses one line from Framer.Next into a Command. Blank lines
// (empty, or only spaces and tabs) return Command{Op: proto.OpNone}, nil:
// the engine ignores them.
//
// A line that starts with '/' is a command; "//" escapes a message that
// starts with a slash. Any other line is a message, sent as it is: its
// spaces are part of it. An EOT alone (Ctrl-D on an empty line, which
// Next returns as a line of its own) is a quit. A line that is not UTF-8
// is refused with proto.ErrInvalidUTF8, and then one that holds a
// control character other than tab with proto.ErrControlChar (keys.go).
// The Command's slices alias line.
func Decode(line []byte) (proto.Command, *proto.Error) {
	return decode(line, nil)
}

// Decode decodes line, which the last call of Next returned, as the
// package's Decode does. Next has looked at every byte of the line on its
// way to the line's end; when they were all plain printable ASCII, as
// nearly every line is, they are UTF-8, and Decode does not look at them
// again to see so. The verdict is trusted for the line Next returned
// only: any other line is checked in full.
func (f *Framer) Decode(line []byte) (proto.Command, *proto.Error) {
	return decode(line, f)
}

// Say returns the text of line, which the last call of Next returned,
// when line is a message, as Decode would return it in an OpSay command,
// and ok false when it is anything else (a command, a blank line, bytes
// that are not UTF-8 or not text), which Decode then tells apart. Nearly
// every line of a conversation is a message, and Say builds no Command:
// a Command is 136 bytes, and its copies as Decode returns it cost a busy
// server more than the rest of a message's decoding (readLines in a
// profile).
func (f *Framer) Say(line []byte) (text []byte, ok bool) {
	if f.check(line) != nil {
		return nil, false
	}
	return sayText(line)
}

// IsCommand reports whether line, or the start of one, is a command
// rather than a message: it starts with a '/' that is not the "//" of a
// message. It looks at nothing else, so it answers for a line that
// Decode refuses, or the start of one too long to be read.
func IsCommand(line []byte) bool {
	return len(line) > 0 && line[0] == '/' && (len(line) == 1 || line[1] != '/')
}

// sayText returns the text of line, valid UTF-8, when it is a message:
// a line that is not blank and does not start with '/', or one that
// starts with "//", which escapes a message's first slash.
func sayText(line []byte) (text []byte, ok bool) {
	switch {
	case isBlank(line):
		return nil, false
	case line[0] != '/':
		return line[:len(line):len(line)], true
	case len(line) > 1 && line[1] == '/':
		return line[1:len(line):len(line)], true
	}
	return nil, false
}

// vouches reports whether line is the last line Next returned and Next
// found it plain. A line Next did not find plain has plainAt zero, which
// no line but an empty one, plain by any count, can match.
func (f *Framer) vouches(line []byte) bool {
	return f != nil && f.plainAt == uintptr(unsafe.Pointer(unsafe.SliceData(line))) && f.plainLen == len(line)
}

// check returns the error for a line that is not text: proto.ErrInvalidUTF8
// for one that is not UTF-8, else proto.ErrControlChar for one that holds
// a control character other than tab. It answers at once when Next
// vouches for the line, else by its plain run and then, if that is not
// all of it, by the rest.
func (f *Framer) check(line []byte) *proto.Error {
	if f.vouches(line) {
		return nil
	}
	rest := line[plainRun(line):]
	switch {
	case len(rest) == 0:
		return nil
	case !utf8.Valid(rest):
		return proto.ErrInvalidUTF8
	case hasControl(rest):
		return proto.ErrControlChar
	}
	return nil
}

// decode is Decode, told by f, when it is not nil, whether line is plain
// printable ASCII.
func decode(line []byte, f *Framer) (proto.Command, *proto.Error) {
	if isEOT(line) {
		return proto.Command{Op: proto.OpQuit}, nil
	}
	// Check first, so no command or message ever carries bytes that are
	// not UTF-8, or control characters, whatever path it takes below.
	if err := f.check(line); err != nil {
		return proto.Command{}, err
	}
	if isBlank(line) {
		return proto.Command{Op: proto.OpNone}, nil
	}
	if text, ok := sayText(line); ok {
		return proto.Command{Op: proto.OpSay, Text: text}, nil
	}

	// The command's name follows the slash directly: "/ who" is not /who.
	end := 1
	for end < len(line) && !isBlankByte(line[end]) {
		end++
	}
	name, args := line[1:end], line[end:]
	switch {
	case equalFoldASCII(name, "login"):
		user, rest := cutWord(args)
		if len(user) == 0 {
			return proto.Command{}, proto.ErrBadName
		}
		// The password is the rest of the line, so that it may contain
		// spaces; only the blanks around it are dropped.
		return proto.Command{Op: proto.OpLogin, Name: user, Password: trimBlanks(rest)}, nil
	case equalFoldASCII(name, "connect"):
		// The token is the rest of the line: a token with a space in it
		// is a bad token, not a good one followed by noise. A share link
		// (http://host:8080/#TOKEN) stands for its token, as it does in
		// the browser's token box: everything up to the last '#' goes.
		// So does the link secret of end-to-end encryption after the
		// token (#TOKEN.SECRET, docs/E2E.md), which a terminal cannot
		// use: it is dropped here, and never reaches the server's logs
		// or an answer.
		token := trimBlanks(args)
		if i := bytes.LastIndexByte(token, '#'); i >= 0 {
			token = token[i+1:]
			if dot := bytes.IndexByte(token, '.'); dot >= 0 {
				token = token[:dot]
			}
		}
		if len(token) == 0 {
			return proto.Command{}, proto.ErrBadToken
		}
		return proto.Command{Op: proto.OpConnect, Token: token}, nil
	case equalFoldASCII(name, "leave"):
		return proto.Command{Op: proto.OpLeave}, nil
	case equalFoldASCII(name, "who"):
		return proto.Command{Op: proto.OpWho}, nil
	case equalFoldASCII(name, "help"):
		return proto.Command{Op: proto.OpHelp}, nil
	case equalFoldASCII(name, "quit"), equalFoldASCII(name, "exit"):
		return proto.Command{Op: proto.OpQuit}, nil
	case equalFoldASCII(name, "newtoken"):
		return proto.Command{Op: proto.OpNewToken}, nil
	case equalFoldASCII(name, "resume"):
		// The key is the rest of the line, as a token is for connect: a
		// key with a space in it is a bad key, which the hub says. So is
		// no key at all: on a connection logged in already, the engine
		// answers that it is, and shows the key to use, which a telnet
		// user who lost it types a bare /resume to see.
		return proto.Command{Op: proto.OpResume, Key: trimBlanks(args)}, nil
	}
	return proto.Command{}, proto.ErrUnknownCommand
}

func isBlankByte(c byte) bool { return c == ' ' || c == '\t' }

func isBlank(b []byte) bool {
	for _, c := range b {
		if !isBlankByte(c) {
			return false
		}
	}
	return true
}

// trimBlanks drops the spaces and tabs around b. It returns nil for an
// all-blank b, so an absent argument is always nil.
func trimBlanks(b []byte) []byte {
	start, end := 0, len(b)
	for start < end && isBlankByte(b[start]) {
		start++
	}
	for end > start && isBlankByte(b[end-1]) {
		end--
	}
	if start == end {
		return nil
	}
	return b[start:end:end]
}

// cutWord returns the first blank-separated word of b, and what follows
// it (with its leading blanks).
func cutWord(b []byte) (word, rest []byte) {
	start := 0
	for start < len(b) && isBlankByte(b[start]) {
		start++
	}
	end := start
	for end < len(b) && !isBlankByte(b[end]) {
		end++
	}
	if start == end {
		return nil, nil
	}
	return b[start:end:end], b[end:]
}

// equalFoldASCII compares b with the lowercase ASCII word without regard
// to ASCII case. Commands are ASCII; bytes.EqualFold would also match
// Unicode look-alikes such as the Kelvin sign for 'k'.
func equalFoldASCII(b []byte, word string) bool {
	if len(b) != len(word) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != word[i] {
			return false
		}
	}
	return true
}
