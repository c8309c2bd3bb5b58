package main

import (
	"net/http"
	"testing"
)

// TestHSTSFromConfig: ws.hsts_max_age reaches the pages duetd serves, and
// without it they carry no Strict-Transport-Security.
func TestHSTSFromConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		want []string
	}{
		{"off by default", nil, nil},
		{"a year", []string{"DUETD_WS_HSTS_MAX_AGE=8760h"}, []string{"max-age=31536000"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startDaemon(t, "", tc.env...)
			d.WaitReady()
			resp, err := http.Get("http://" + d.WS + "/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			got := resp.Header.Values("Strict-Transport-Security")
			if resp.StatusCode != 200 || len(got) != len(tc.want) || (len(got) == 1 && got[0] != tc.want[0]) {
				t.Fatalf("status %d, Strict-Transport-Security %q, want %q", resp.StatusCode, got, tc.want)
			}
			if resp.Header.Get("X-Frame-Options") != "DENY" {
				t.Errorf("X-Frame-Options = %q", resp.Header.Get("X-Frame-Options"))
			}
		})
	}
}
