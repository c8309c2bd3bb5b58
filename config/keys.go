package config

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// key is one configuration key: its dotted name and where it lives in
// Config. Everything that needs the set of keys (defaults, environment
// names, unknown-key detection, Describe) derives from the one list below,
// so a field added to Config becomes a key everywhere at once.
type key struct {
	name  string // dotted, as in the YAML file: "limits.max_line"
	index []int  // field path from Config, for reflect.Value.FieldByIndex
	typ   reflect.Type
}

// keys lists every key of Config in declaration order. It is computed
// once from the struct tags and never modified.
var keys = collectKeys(reflect.TypeFor[Config](), "", nil)

// keyByName and sections index keys: a YAML mapping is walked by asking
// whether each name is a key (a value) or a section (a mapping of keys).
var (
	keyByName = indexKeys(keys)
	sections  = collectSections(keys)
)

var durationType = reflect.TypeFor[time.Duration]()

func collectKeys(t reflect.Type, prefix string, index []int) []key {
	var out []key
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("mapstructure")
		if tag == "" || tag == "-" {
			panic(fmt.Sprintf("config: field %s has no mapstructure tag", f.Name))
		}
		name := tag
		if prefix != "" {
			name = prefix + "." + tag
		}
		path := append(append([]int(nil), index...), i)
		if f.Type.Kind() == reflect.Struct {
			out = append(out, collectKeys(f.Type, name, path)...)
			continue
		}
		out = append(out, key{name: name, index: path, typ: f.Type})
	}
	return out
}

func indexKeys(ks []key) map[string]key {
	m := make(map[string]key, len(ks))
	for _, k := range ks {
		m[k.name] = k
	}
	return m
}

func collectSections(ks []key) map[string]bool {
	m := make(map[string]bool)
	for _, k := range ks {
		for i := range len(k.name) {
			if k.name[i] == '.' {
				m[k.name[:i]] = true
			}
		}
	}
	return m
}

// Keys returns every configuration key, sorted.
func Keys() []string {
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.name
	}
	slices.Sort(names)
	return names
}

// EnvName returns the environment variable that sets a key:
// "limits.max_line" is DUETD_LIMITS_MAX_LINE.
func EnvName(key string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

const envPrefix = "DUETD_"

// field returns the value of k inside c, addressable when c is a pointer.
func (k key) field(c *Config) reflect.Value {
	return reflect.ValueOf(c).Elem().FieldByIndex(k.index)
}

// emptyAllowed reports whether a key may be given no value in YAML
// ("listen:" on its own): for strings and lists that reads naturally as
// empty, for numbers and durations it is almost certainly a mistake.
func (k key) emptyAllowed() bool {
	return k.typ.Kind() == reflect.String || k.typ.Kind() == reflect.Slice
}

// decode converts a raw value into k's type. Raw values come from three
// places: Go values from Defaults, YAML scalars and sequences from the
// file, and strings from the environment and flags; decode accepts each
// but is strict about meaning. In particular a bare number is not a
// duration: "30" would otherwise silently mean 30 nanoseconds.
func (k key) decode(raw any) (reflect.Value, error) {
	switch {
	case k.typ == durationType:
		d, err := toDuration(raw)
		return reflect.ValueOf(d), err
	case k.typ.Kind() == reflect.String:
		s, ok := raw.(string)
		if !ok {
			return reflect.Value{}, fmt.Errorf("want a string, got %s (quote it)", describeRaw(raw))
		}
		return reflect.ValueOf(s).Convert(k.typ), nil
	case k.typ.Kind() == reflect.Int:
		n, err := toInt(raw)
		return reflect.ValueOf(n).Convert(k.typ), err
	case k.typ.Kind() == reflect.Float64:
		f, err := toFloat(raw)
		return reflect.ValueOf(f).Convert(k.typ), err
	case k.typ.Kind() == reflect.Bool:
		b, err := toBool(raw)
		return reflect.ValueOf(b).Convert(k.typ), err
	case k.typ.Kind() == reflect.Slice && k.typ.Elem().Kind() == reflect.String:
		l, err := toStrings(raw)
		return reflect.ValueOf(l).Convert(k.typ), err
	}
	panic(fmt.Sprintf("config: key %s has unsupported type %s", k.name, k.typ))
}

func toDuration(raw any) (time.Duration, error) {
	switch v := raw.(type) {
	case time.Duration:
		return v, nil
	case string:
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return 0, fmt.Errorf("want a duration such as \"30s\" or \"1m30s\", got %q", v)
		}
		return d, nil
	}
	return 0, fmt.Errorf("want a duration with a unit such as \"30s\", got %s", describeRaw(raw))
}

func toInt(raw any) (int, error) {
	switch v := raw.(type) {
	case int:
		return v, nil
	case int64:
		if v >= math.MinInt && v <= math.MaxInt {
			return int(v), nil
		}
	case uint64:
		if v <= math.MaxInt {
			return int(v), nil
		}
	case float64:
		if v == math.Trunc(v) && v >= math.MinInt && v <= math.MaxInt {
			return int(v), nil
		}
	case string:
		if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
			return n, nil
		}
	}
	return 0, fmt.Errorf("want a whole number, got %s", describeRaw(raw))
}

func toFloat(raw any) (float64, error) {
	var f float64
	switch v := raw.(type) {
	case float64:
		f = v
	case int:
		f = float64(v)
	case int64:
		f = float64(v)
	case uint64:
		f = float64(v)
	case string:
		parsed, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return 0, fmt.Errorf("want a number, got %q", v)
		}
		f = parsed
	default:
		return 0, fmt.Errorf("want a number, got %s", describeRaw(raw))
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("want a finite number, got %s", describeRaw(raw))
	}
	return f, nil
}

func toBool(raw any) (bool, error) {
	switch v := raw.(type) {
	case bool:
		return v, nil
	case string:
		if b, err := strconv.ParseBool(strings.TrimSpace(v)); err == nil {
			return b, nil
		}
	}
	return false, fmt.Errorf("want true or false, got %s", describeRaw(raw))
}

// toStrings accepts a YAML sequence of strings or, as the environment
// must spell a list, one comma-separated string ("a, b"). Blank items are
// dropped, so an empty string is an empty list.
func toStrings(raw any) ([]string, error) {
	switch v := raw.(type) {
	case []string:
		return append([]string{}, v...), nil
	case []any:
		out := make([]string, 0, len(v))
		for i, item := range v {
			s, ok := item.(string)
			if !ok {
				return nil, fmt.Errorf("item %d: want a string, got %s (quote it)", i+1, describeRaw(item))
			}
			out = append(out, s)
		}
		return out, nil
	case string:
		out := []string{}
		for item := range strings.SplitSeq(v, ",") {
			if item = strings.TrimSpace(item); item != "" {
				out = append(out, item)
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("want a list of strings, got %s", describeRaw(raw))
}

// describeRaw names a value for an error message without dumping a
// whole nested structure into it.
func describeRaw(raw any) string {
	switch v := raw.(type) {
	case nil:
		return "nothing"
	case string:
		return strconv.Quote(v)
	case map[string]any, map[any]any:
		return "a mapping"
	case []any:
		return "a list"
	}
	return fmt.Sprint(raw)
}
