package web

import (
	"strings"
	"testing"
	"testing/fstest"
)

// moduleSite is a site whose script imports a module that imports
// another, as app.js is to import e2e.js.
func moduleSite(t *testing.T, util string) *Site {
	t.Helper()
	s, err := newSite(fstest.MapFS{
		"index.html": {Data: []byte(`<script type="module" src="app.js"></script>`)},
		"app.js":     {Data: []byte("import * as e2e from './e2e.js';\nconst again = () => import(\"./e2e.js\");\n")},
		"e2e.js":     {Data: []byte("import { x } from './util.js';\nexport const y = x;\n")},
		"util.js":    {Data: []byte(util)},
		"style.css":  {Data: []byte("p{}")},
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A module is imported under its versioned URL, and a new version of it
// is a new version of every script on the way to it from the index.
func TestVersionedImports(t *testing.T) {
	s := moduleSite(t, "export const x = 1;\n")
	app, e2e, util := s.files["/app.js"], s.files["/e2e.js"], s.files["/util.js"]
	body := func(f *file) string { return string(f.identity.body) }

	if want := "from './e2e.js?v=" + e2e.version + "'"; !strings.Contains(body(app), want) {
		t.Errorf("app.js:\n%s\nwant %s", body(app), want)
	}
	if want := `import("./e2e.js?v=` + e2e.version + `")`; !strings.Contains(body(app), want) {
		t.Errorf("app.js:\n%s\nwant %s", body(app), want)
	}
	if want := "from './util.js?v=" + util.version + "'"; !strings.Contains(body(e2e), want) {
		t.Errorf("e2e.js:\n%s\nwant %s", body(e2e), want)
	}
	// Each version names the body served, rewrite included.
	for _, f := range []*file{app, e2e, util} {
		if f.version != versionOf(f.identity.body) || f.identity.etag != `"`+f.version+`"` {
			t.Errorf("%s: version %s, ETag %s, body's %s", f.name, f.version, f.identity.etag, versionOf(f.identity.body))
		}
	}
	if !strings.Contains(body(s.files["/"]), `src="app.js?v=`+app.version+`"`) {
		t.Errorf("index: %s", body(s.files["/"]))
	}
	// The versioned import is the URL that is cached for good.
	req := get(t, "GET", "/e2e.js?v="+e2e.version)
	raw, _ := s.Respond(req)
	resp, _ := response(t, raw, req)
	if got := resp.Header.Get("Cache-Control"); got != cacheImmutable {
		t.Errorf("the imported URL: Cache-Control %q", got)
	}

	changed := moduleSite(t, "export const x = 2;\n")
	for _, name := range []string{"/app.js", "/e2e.js", "/util.js"} {
		if changed.files[name].version == s.files[name].version {
			t.Errorf("%s keeps its version when a module under it changes", name)
		}
	}
	if changed.files["/style.css"].version != s.files["/style.css"].version {
		t.Error("style.css, which imports nothing, changed version")
	}
}

func TestImportCycleRefused(t *testing.T) {
	_, err := newSite(fstest.MapFS{
		"index.html": {Data: []byte(`<script type="module" src="a.js"></script>`)},
		"a.js":       {Data: []byte("import './b.js';")},
		"b.js":       {Data: []byte("import './a.js';")},
	}, Options{})
	if err == nil || !strings.Contains(err.Error(), "imports itself") {
		t.Fatalf("newSite: %v", err)
	}
}
