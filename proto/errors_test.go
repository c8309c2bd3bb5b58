package proto

import (
	"testing"
	"time"
)

// TestLoginTimeoutSaysTheLimit: the login_timeout error gives the limit
// as set; with the default limit, it is ErrLoginTimeout's text.
func TestLoginTimeoutSaysTheLimit(t *testing.T) {
	for _, tt := range []struct {
		limit time.Duration
		want  string
	}{
		{time.Minute, ErrLoginTimeout.Text},
		{30 * time.Second, "no login within 30s; goodbye"},
		{90 * time.Second, "no login within 1m30s; goodbye"},
	} {
		if e := LoginTimeout(tt.limit); e.Code != ErrLoginTimeout.Code || e.Text != tt.want {
			t.Errorf("LoginTimeout(%v) = %s: %s, want %s", tt.limit, e.Code, e.Text, tt.want)
		}
	}
}
