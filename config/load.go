package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// Where a value came from, as recorded in Sources and shown by Describe.
const (
	SourceDefault = "default"
	SourceFile    = "file"
	SourceEnv     = "env"
	SourceFlag    = "flag"
	// SourceComputed marks a value worked out at start rather than set:
	// cluster.node_id when it is left empty. Load never sets it; the
	// daemon records it with Sources.Computed.
	SourceComputed = "computed"
)

// ErrHelp matches, with errors.Is, the error Load returns when the
// arguments ask for help (-h or --help). It is pflag's, so callers may
// test for either.
var ErrHelp = pflag.ErrHelp

// HelpError is what Load returns for -h or --help: its text is Usage(),
// ready to print before exiting successfully.
type HelpError struct {
	Usage string
}

func (e *HelpError) Error() string { return e.Usage }

// Unwrap makes errors.Is(err, ErrHelp) hold.
func (e *HelpError) Unwrap() error { return ErrHelp }

// UsageError is a command line Load cannot parse: an unknown flag, a
// flag without its value, an argument where none belongs.
type UsageError struct {
	Err error
	// Arg is the argument where none belongs, when that is the error:
	// the daemon tells a command given after the flags from a stray word.
	Arg string
}

func (e *UsageError) Error() string { return "config: " + e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// configEnv names the config file when --config is not given, for
// containers and service managers that prefer the environment.
const configEnv = envPrefix + "CONFIG"

// flagKeys are the keys that have a command-line flag. Only the settings
// an operator changes per run get one; everything else is file or env.
var flagKeys = []struct{ flag, key, usage string }{
	{"tcp-listen", "tcp.listen", `line-protocol (netcat, telnet) listen address; "" disables it`},
	{"ws-listen", "ws.listen", `HTTP and WebSocket listen address; "" disables it`},
	{"admin-listen", "admin.listen", `metrics and health listen address; "" disables it`},
	{"log-level", "log.level", "debug, info, warn or error"},
	{"log-format", "log.format", "json, console, or auto (console on a terminal)"},
}

// Sources records where each effective value came from, and holds what
// is needed to load the same configuration again on SIGHUP.
type Sources struct {
	// File is the config file that was read, "" if none.
	File string

	source   map[string]string // key -> SourceDefault, SourceFile, SourceEnv, SourceFlag or SourceComputed
	notes    map[string]string // key -> how a computed value was worked out
	warnings []*Error
	args     []string
	environ  []string
}

// Of returns where key's value came from: "default", "file", "env",
// "flag" or "computed"; "" for a name that is not a key.
func (s *Sources) Of(key string) string {
	if s == nil {
		return ""
	}
	return s.source[key]
}

// Computed records that key's effective value was worked out rather than
// set, and how, for Describe. The caller stores the value in the Config.
func (s *Sources) Computed(key, how string) {
	s.source[key] = SourceComputed
	s.Note(key, how)
}

// Note attaches a remark to key's line in Describe, such as how many
// accounts the users file holds.
func (s *Sources) Note(key, text string) {
	if s.notes == nil {
		s.notes = make(map[string]string)
	}
	s.notes[key] = text
}

// Warnings returns what Load found questionable but not wrong: DUETD_*
// variables that name no key, and values that are valid but probably not
// meant (see Config.Warnings). Each names the variable or key it is
// about. The daemon logs them at start and on every reload;
// check-config prints them.
func (s *Sources) Warnings() []*Error {
	if s == nil {
		return nil
	}
	return s.warnings
}

// origin spells out a source for error messages, precisely enough for an
// operator to find the line to fix.
func (s *Sources) origin(key string) string {
	switch s.source[key] {
	case SourceFile:
		return "in " + s.File
	case SourceEnv:
		return "from " + EnvName(key)
	case SourceFlag:
		for _, f := range flagKeys {
			if f.key == key {
				return "from --" + f.flag
			}
		}
	}
	return "by default"
}

// WaysToSet names every way to set key, for a message that asks the
// operator to change it: "--ws-listen, DUETD_WS_LISTEN or ws.listen in
// the config file".
func WaysToSet(key string) string {
	ways := EnvName(key) + " or " + key + " in the config file"
	for _, f := range flagKeys {
		if f.key == key {
			return "--" + f.flag + ", " + ways
		}
	}
	return ways
}

// Load parses args (flags only, without the program name) and reads the
// environment from environ ("KEY=value" strings, os.Environ() in
// production), returning the effective configuration and where each
// value came from. Precedence, lowest first: Defaults, the YAML file
// (--config or DUETD_CONFIG), DUETD_* variables, flags. Every problem
// found is reported, each as an *Error naming its key where there is
// one; -h or --help returns a *HelpError, which errors.Is matches to
// ErrHelp. A nil environ is an empty environment.
//
// A DUETD_* variable that names no key is a warning (Sources.Warnings),
// with the variable it probably meant, and not an error as an unknown key
// in the file is: the environment is shared with other programs (the
// install script reads DUETD_BINARY), and a variable set for one of them
// must not stop the daemon.
func Load(args []string, environ []string) (*Config, *Sources, error) {
	lookupEnv := lookupIn(environ)
	flags := newFlagSet()
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil, nil, &HelpError{Usage: Usage()}
		}
		return nil, nil, &UsageError{Err: err}
	}
	if flags.NArg() > 0 {
		return nil, nil, &UsageError{Err: fmt.Errorf("unexpected argument %q", flags.Arg(0)), Arg: flags.Arg(0)}
	}

	src := &Sources{
		source:  make(map[string]string, len(keys)),
		args:    slices.Clone(args),
		environ: slices.Clone(environ),
	}
	fileNamedBy := "--config"
	if flags.Changed("config") {
		src.File, _ = flags.GetString("config")
	} else if path, ok := lookupEnv(configEnv); ok {
		src.File, fileNamedBy = path, configEnv
	}

	v := viper.New()
	// Every key gets a default, zero values included: viper only knows a
	// key that some layer holds (the reason AutomaticEnv alone never
	// reaches Unmarshal), and the defaults layer is the one that always
	// holds every key.
	defaults := Defaults()
	for _, k := range keys {
		v.SetDefault(k.name, k.field(&defaults).Interface())
		src.source[k.name] = SourceDefault
	}

	// A value that does not parse is one problem among the others, not
	// the end of the check: it is reported, its key keeps the value of
	// the layer below (the default, or the file's), and every other key
	// is still validated, so that one run of check-config shows
	// everything there is to fix. unparsed holds the keys whose value in
	// effect did not parse, so that no problem judged on the stand-in
	// value is reported (see Load's end).
	var problems []error
	unparsed := make(map[string]bool)
	if src.File != "" {
		fileValues, fileProblems, err := readFile(src.File, fileNamedBy)
		if err != nil {
			return nil, nil, err
		}
		problems = append(problems, fileProblems...)
		for _, p := range fileProblems {
			markUnparsed(unparsed, p)
		}
		if err := v.MergeConfigMap(nest(fileValues)); err != nil {
			return nil, nil, fmt.Errorf("config: %s: %w", src.File, err)
		}
		for name := range fileValues {
			src.source[name] = SourceFile
		}
	}

	// viper reads the process environment itself (AutomaticEnv calls
	// os.LookupEnv), which tests cannot substitute and which hides from
	// us which variables were set. So the environment is read here,
	// through lookupEnv, and merged over the file in viper's config
	// layer: same precedence, and each value checked where it came from.
	// A variable that is set but empty counts: DUETD_TCP_LISTEN= turns
	// the TCP listener off.
	envValues := make(map[string]any)
	for _, k := range keys {
		raw, ok := lookupEnv(EnvName(k.name))
		if !ok {
			continue
		}
		if _, err := k.decode(raw); err != nil {
			problems = append(problems, &Error{Key: k.name, Msg: err.Error() + " from " + EnvName(k.name)})
			unparsed[k.name] = true
			continue
		}
		// A good value here overrides a bad one in the file: that one is
		// still reported, but the value in effect is this one.
		delete(unparsed, k.name)
		envValues[k.name] = raw
		src.source[k.name] = SourceEnv
	}
	if err := v.MergeConfigMap(nest(envValues)); err != nil {
		return nil, nil, fmt.Errorf("config: environment: %w", err)
	}

	// Flags go in viper's own flag layer: viper consults a bound flag
	// only when it was given on the command line, so the flag defaults
	// (shown by --help) never shadow the file or the environment.
	for _, f := range flagKeys {
		if err := v.BindPFlag(f.key, flags.Lookup(f.flag)); err != nil {
			return nil, nil, fmt.Errorf("config: --%s: %w", f.flag, err)
		}
		if flags.Changed(f.flag) {
			src.source[f.key] = SourceFlag
		}
	}

	// Values that did not parse never reached viper, so what fails here
	// is a flag's; its key then keeps Defaults' value.
	cfg := Defaults()
	for _, k := range keys {
		val, err := k.decode(v.Get(k.name))
		if err != nil {
			problems = append(problems, &Error{Key: k.name, Msg: err.Error() + " " + src.origin(k.name)})
			unparsed[k.name] = true
			continue
		}
		if src.source[k.name] == SourceFlag {
			delete(unparsed, k.name)
		}
		k.field(&cfg).Set(val)
	}
	if err := parsedOnly(cfg.Validate(), unparsed); err != nil {
		problems = append(problems, unjoin(annotate(err, src))...)
	}
	if len(problems) > 0 {
		return nil, nil, errors.Join(problems...)
	}
	src.warnings = append(unknownEnv(environ), cfg.Warnings()...)
	return &cfg, src, nil
}

// markUnparsed records in unparsed the keys a problem of the file leaves
// without their value: the key named, or every key of a section that is
// not a mapping. An unknown key names no key, and marks none.
func markUnparsed(unparsed map[string]bool, problem error) {
	var ce *Error
	if !errors.As(problem, &ce) {
		return
	}
	if _, ok := keyByName[ce.Key]; ok {
		unparsed[ce.Key] = true
		return
	}
	if sections[ce.Key] {
		for _, k := range keys {
			if strings.HasPrefix(k.name, ce.Key+".") {
				unparsed[k.name] = true
			}
		}
	}
}

// parsedOnly leaves out of Validate's err the problems of keys whose
// value did not parse, and those judged against such a key (Error's
// against): they were judged on a value the operator did not set, the
// default or the file's standing in for it, so they could only mislead.
// The key's own problem, that its value did not parse, is reported
// already. nil when nothing is left.
func parsedOnly(err error, unparsed map[string]bool) error {
	if err == nil || len(unparsed) == 0 {
		return err
	}
	var out []error
	for _, e := range unjoin(err) {
		var ce *Error
		if errors.As(e, &ce) && (unparsed[ce.Key] || unparsed[ce.against]) {
			continue
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}

// unjoin lists the errors errors.Join joined into err, or err alone, so
// that the problems Load returns are one flat list, each its own line.
func unjoin(err error) []error {
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		return joined.Unwrap()
	}
	return []error{err}
}

// lookupIn returns a lookup over environ. When a name occurs twice the
// last one counts, as with os.Getenv.
func lookupIn(environ []string) func(string) (string, bool) {
	vars := make(map[string]string, len(environ))
	for _, kv := range environ {
		if name, value, ok := strings.Cut(kv, "="); ok {
			vars[name] = value
		}
	}
	return func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok
	}
}

// unknownEnv warns of every DUETD_* variable in environ that sets no key,
// suggesting the variable it probably meant.
func unknownEnv(environ []string) []*Error {
	known := map[string]bool{configEnv: true}
	for _, k := range keys {
		known[EnvName(k.name)] = true
	}
	var names []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, envPrefix) && !known[name] && !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	var out []*Error
	for _, name := range names {
		msg := "names no key, so it is ignored"
		if guess := nearestEnv(name); guess != "" {
			msg += "; did you mean " + guess + "?"
		}
		out = append(out, &Error{Key: name, Msg: msg})
	}
	return out
}

// Reload loads again from the same file, environment and flags as the
// Load that returned s, for SIGHUP. On error the caller keeps its current
// configuration; nothing here has side effects.
func (s *Sources) Reload() (*Config, *Sources, error) {
	return Load(s.args, s.environ)
}

// Usage returns the flag and environment help printed for --help.
func Usage() string {
	var b strings.Builder
	b.WriteString("Flags:\n")
	b.WriteString(newFlagSet().FlagUsages())
	b.WriteString("\nEvery key can also be set in the environment as DUETD_<KEY>, dots as\n")
	b.WriteString("underscores (DUETD_TCP_LISTEN, DUETD_LIMITS_MAX_LINE); lists are\n")
	b.WriteString("comma-separated. Flags override the environment, which overrides the\n")
	b.WriteString("file, which overrides the defaults. 'duetd check-config' lists every key\n")
	b.WriteString("with its value; the example file (scripts/duetd.yaml, installed as\n")
	b.WriteString("/etc/duetd/duetd.yaml) explains each.\n")
	return b.String()
}

func newFlagSet() *pflag.FlagSet {
	defaults := Defaults()
	fs := pflag.NewFlagSet("duetd", pflag.ContinueOnError)
	// Load returns errors and Usage returns text; nothing is printed here.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.String("config", "", "YAML config file (default $"+configEnv+", else none)")
	for _, f := range flagKeys {
		fs.String(f.flag, keyByName[f.key].field(&defaults).String(), f.usage)
	}
	return fs
}

// readFile reads the YAML file at path, named by namedBy (--config or
// DUETD_CONFIG), into a flat map from key to raw value. Unknown keys are
// errors, not warnings: a misspelt key that is silently ignored leaves
// the default in force, and nobody notices until it matters.
//
// A file that cannot be read, or is not YAML, is err: nothing in it can
// be used. Keys that are unknown or whose value does not parse are
// problems, each an *Error naming its key; values holds the others, for
// Load to check with the rest of the configuration.
func readFile(path, namedBy string) (values map[string]any, problems []error, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, unreadable(err, namedBy)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, nil, fmt.Errorf("config: %s: %w%s", path, err, tabHint(data))
	}
	values = make(map[string]any)
	flattenYAML(doc, "", path, values, &problems)
	return values, problems, nil
}

// tabHint names the first line indented with a tab, which YAML forbids
// and reports only as "found character that cannot start any token";
// editors set up for Go or Makefiles write tabs. "" if there is none.
func tabHint(data []byte) string {
	for i, line := range strings.Split(string(data), "\n") {
		indent := line[:len(line)-len(strings.TrimLeft(line, " \t"))]
		if strings.Contains(indent, "\t") && strings.TrimSpace(line) != "" {
			return fmt.Sprintf(" (line %d is indented with a tab: YAML indents with spaces only)", i+1)
		}
	}
	return ""
}

// unreadable is the error for a config file that cannot be read. It says
// where the file's name came from, since a DUETD_CONFIG left in the
// environment is easily forgotten, and, when the file's mode is in the
// way, who may read it: install.sh gives the configuration to root and
// the duetd group alone, so an operator's own account is refused.
func unreadable(err error, namedBy string) error {
	hint := ""
	if errors.Is(err, fs.ErrPermission) {
		hint = "; run duetd as a user that may read it (the installed " +
			"configuration is readable by root and the duetd group only: sudo)"
	}
	return fmt.Errorf("config: %w (the file named by %s)%s", err, namedBy, hint)
}

func flattenYAML(m map[string]any, prefix, path string, out map[string]any, problems *[]error) {
	for _, name := range slices.Sorted(maps.Keys(m)) {
		raw := m[name]
		full := name
		if prefix != "" {
			full = prefix + "." + name
		}
		k, isKey := keyByName[full]
		switch {
		case isKey && raw == nil && k.emptyAllowed():
			// "listen:" with nothing after it means empty.
			val, _ := k.decode("")
			out[full] = val.Interface()
		case isKey && raw == nil:
			*problems = append(*problems, &Error{Key: full, Msg: "no value in " + path + "; remove the line to use the default"})
		case isKey:
			if _, err := k.decode(raw); err != nil {
				*problems = append(*problems, &Error{Key: full, Msg: err.Error() + " in " + path})
				continue
			}
			out[full] = raw
		case sections[full]:
			switch sub := raw.(type) {
			case nil:
				// A section whose keys are all commented out.
			case map[string]any:
				flattenYAML(sub, full, path, out, problems)
			case map[any]any:
				// yaml.v3 uses this type when some key is not a string
				// (a number, say); such a key is unknown like any other.
				flattenYAML(stringKeys(sub), full, path, out, problems)
			default:
				*problems = append(*problems, &Error{Key: full, Msg: "want a mapping of keys, got " + describeRaw(raw) + " in " + path})
			}
		default:
			msg := "unknown key in " + path
			if guess := nearestKey(full); guess != "" {
				msg += "; did you mean " + guess + "?"
			}
			*problems = append(*problems, &Error{Key: full, Msg: msg})
		}
	}
}

func stringKeys(m map[any]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[fmt.Sprint(k)] = v
	}
	return out
}

// nest turns flat dotted keys back into the nested maps viper merges.
func nest(flat map[string]any) map[string]any {
	root := make(map[string]any)
	for name, val := range flat {
		m := root
		parts := strings.Split(name, ".")
		for _, p := range parts[:len(parts)-1] {
			sub, ok := m[p].(map[string]any)
			if !ok {
				sub = make(map[string]any)
				m[p] = sub
			}
			m = sub
		}
		m[parts[len(parts)-1]] = val
	}
	return root
}

// nearestKey suggests the key or section a misspelt name probably meant,
// or "" if nothing is close.
func nearestKey(name string) string {
	// Keys are lower case; "TCP" or "Listen" is a different word to the
	// edit distance, not to the operator who wrote it.
	name = strings.ToLower(name)
	names := make([]string, 0, len(keys)+len(sections))
	for _, k := range keys {
		names = append(names, k.name)
	}
	if best := nearest(name, append(names, slices.Collect(maps.Keys(sections))...)); best != "" {
		return best
	}
	return elsewhere(name, ".", names)
}

// elsewhere suggests, for a name no key is spelt like, the keys it would
// be in another section: "max_line" at the top level, or limits.window,
// mean limits.max_line and resume.window. sep joins a name's parts ("."
// in the file, "_" in the environment). Each shorter tail of name is
// tried in turn; one that ends more than three keys suggests nothing.
func elsewhere(name, sep string, candidates []string) string {
	for tail, ok := name, true; ok; _, tail, ok = strings.Cut(tail, sep) {
		var found []string
		for _, c := range candidates {
			if strings.HasSuffix(c, sep+tail) {
				found = append(found, c)
			}
		}
		switch {
		case len(found) == 1:
			return found[0]
		case len(found) > 1 && len(found) <= 3:
			return strings.Join(found[:len(found)-1], ", ") + " or " + found[len(found)-1]
		}
	}
	return ""
}

// nearestEnv is nearestKey for a DUETD_* variable: the variable of the
// key it probably meant, or "". The prefix, which every candidate
// shares, is no part of what is compared: it would let a short name
// stray as far as a long one.
func nearestEnv(name string) string {
	name = strings.ToUpper(name)
	candidates := []string{configEnv}
	for _, k := range keys {
		candidates = append(candidates, EnvName(k.name))
	}
	trimmed := make([]string, len(candidates))
	for i, c := range candidates {
		trimmed[i] = strings.TrimPrefix(c, envPrefix)
	}
	if best := nearest(strings.TrimPrefix(name, envPrefix), trimmed); best != "" {
		return envPrefix + best
	}
	return elsewhere(name, "_", candidates)
}

// nearest is the candidate a typo away from name, the first in order of
// the fewest edits, then alphabetically; or "" if none is. A typo is one
// edit in a name of up to five letters and two in a longer one: past
// that a near name is chance, not what was meant ("foo" is two edits
// from "log"), and suggesting it sends the operator the wrong way.
func nearest(name string, candidates []string) string {
	best, bestDist := "", min(2, max(len(name), 3)/3)+1
	for _, c := range candidates {
		if d := editDistance(name, c); d < bestDist || (d == bestDist && c < best) {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance counts the edits that make a into b: a letter inserted,
// deleted or replaced, or two neighbours swapped ("tpc" for "tcp", the
// commonest slip of a typist, is one edit and not two).
func editDistance(a, b string) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

// annotate adds to each validation error where the offending value came
// from, so "must be greater than 0" points at the file, variable or flag.
// A default value is wrong only as it relates to another key's (Error's
// against), which was set: that setting is named, and what to do, as in
// "got 30s (the default, which resume.window set from
// DUETD_RESUME_WINDOW rules out; lower resume.replay_recent too)".
func annotate(err error, src *Sources) error {
	list := unjoin(err)
	out := make([]error, 0, len(list))
	for _, e := range list {
		var ce *Error
		if !errors.As(e, &ce) {
			out = append(out, e)
			continue
		}
		switch from := src.Of(ce.Key); {
		case from != SourceDefault && from != "":
			e = &Error{Key: ce.Key, Msg: ce.Msg + " (set " + src.origin(ce.Key) + ")"}
		case ce.against != "" && src.Of(ce.against) != SourceDefault:
			e = &Error{Key: ce.Key, Msg: ce.Msg + " (the default, which " + ce.against + " set " + src.origin(ce.against) +
				" rules out; " + ce.fix + " " + ce.Key + " too)"}
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}
