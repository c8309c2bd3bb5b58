package config

import (
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Describe renders every effective key, its value and its source, one per
// line and sorted by key, after a first line naming the config file. A
// computed value (Sources.Computed) is followed by a comment saying how it
// was worked out. It is the output of `duetd check-config`, so a password
// in cluster.redis and the cluster secret are masked. Warnings are not
// part of it: check-config prints Sources.Warnings to standard error, as a
// start logs them. src may be nil, in which case sources show as "-".
func (c *Config) Describe(src *Sources) string {
	var b strings.Builder
	file := "none"
	if src != nil && src.File != "" {
		file = src.File
	}
	fmt.Fprintf(&b, "# config file: %s\n", file)

	sorted := slices.Clone(keys)
	slices.SortFunc(sorted, func(a, b key) int { return strings.Compare(a.name, b.name) })
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, k := range sorted {
		source := "-"
		if src != nil {
			source = src.Of(k.name)
		}
		value := formatValue(k.field(c))
		switch k.name {
		case "cluster.redis":
			value = strconv.Quote(redact(c.Cluster.Redis))
		case "cluster.secret":
			if c.Cluster.Secret != "" {
				value = strconv.Quote("xxxxx")
			}
		}
		note := src.note(k.name)
		if note == "" {
			note = c.emptyMeans(k.name)
		}
		if note != "" {
			fmt.Fprintf(tw, "%s\t%s\t%s\t# %s\n", k.name, value, source, note)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", k.name, value, source)
	}
	tw.Flush()
	return b.String()
}

// emptyMeans says what a zero or empty value stands for, where that is
// not "none": check-config's bare "0" for resume.max_away or "[]" for
// ws.allowed_origins reads as "no sessions away" and "no origins".
func (c *Config) emptyMeans(key string) string {
	switch {
	case key == "resume.max_away" && c.Resume.MaxAway == 0:
		return fmt.Sprintf("0: a quarter of limits.max_conns, %d", c.ResumeMaxAway())
	case key == "resume.max_away_per_ip" && c.Resume.MaxAwayPerIP == 0:
		return fmt.Sprintf("0: limits.max_conns_per_ip, %d", c.ResumeMaxAwayPerIP())
	case key == "ws.allowed_origins" && len(c.WS.AllowedOrigins) == 0:
		return "none listed: the page's own origin only"
	}
	return ""
}

func (s *Sources) note(key string) string {
	if s == nil {
		return ""
	}
	return s.notes[key]
}

// Changed returns the keys whose values differ between a and b, sorted:
// what a reload changed.
func Changed(a, b *Config) []string {
	var out []string
	for _, k := range keys {
		x, y := k.field(a), k.field(b)
		if k.typ.Kind() == reflect.Slice {
			if !slices.Equal(x.Interface().([]string), y.Interface().([]string)) {
				out = append(out, k.name)
			}
			continue
		}
		if !x.Equal(y) {
			out = append(out, k.name)
		}
	}
	slices.Sort(out)
	return out
}

// Keep sets each of keys in c to its value in prev: a reload keeps the
// values of the keys that change only on restart, in what it says is in
// effect. Unknown keys are ignored.
func (c *Config) Keep(prev *Config, keys ...string) {
	for _, name := range keys {
		if k, ok := keyByName[name]; ok {
			k.field(c).Set(k.field(prev))
		}
	}
}

// formatValue writes a value as it would be written in the YAML file.
func formatValue(v reflect.Value) string {
	if v.Type() == durationType {
		return formatDuration(time.Duration(v.Int()))
	}
	switch v.Kind() {
	case reflect.String:
		return strconv.Quote(v.String())
	case reflect.Int:
		return strconv.FormatInt(v.Int(), 10)
	case reflect.Float64:
		return strconv.FormatFloat(v.Float(), 'g', -1, 64)
	case reflect.Bool:
		return strconv.FormatBool(v.Bool())
	case reflect.Slice:
		items := make([]string, v.Len())
		for i := range items {
			items[i] = strconv.Quote(v.Index(i).String())
		}
		return "[" + strings.Join(items, ", ") + "]"
	}
	return fmt.Sprint(v.Interface())
}

// formatDuration drops the zero tails time.Duration.String leaves:
// "1m" rather than "1m0s".
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func redact(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil {
		// Cannot tell where a password would be; show nothing of it.
		return "(not a valid URL)"
	}
	return u.Redacted()
}
