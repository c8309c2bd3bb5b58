package auth

import (
	"bytes"
	"errors"
	"testing"

	"duet/proto"
)

// FuzzParse: whatever the file holds, Parse either refuses it with a
// LineError or returns a table in which every account has a valid name
// and a well-formed bcrypt hash. It never panics.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"alice:" + hashY + "\n",
		"# c\n\nalice:" + hashY + "\r\nbob:" + hashA + "\n",
		"bob:" + hashMD5 + "\n",
		"carol:" + hashDES,
		"dave:" + hashSHA,
		":\n",
		"a:b:c\n",
		"alice:" + hashY + "\nALICE:" + hashB + "\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tab, err := Parse(bytes.NewReader(data), "fuzz")
		if err != nil {
			var le *LineError
			if !errors.As(err, &le) {
				t.Fatalf("error is not a LineError: %v", err)
			}
			if le.Line < 1 {
				t.Fatalf("line %d", le.Line)
			}
			return
		}
		for key, e := range tab.byKey {
			if !proto.ValidName([]byte(e.name)) || fold(e.name) != key {
				t.Fatalf("account %q under key %q", e.name, key)
			}
			if len(e.hash) != bcryptLen || hashKind(e.hash) != "" {
				t.Fatalf("account %q: hash %q", e.name, e.hash)
			}
		}
	})
}
