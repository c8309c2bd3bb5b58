package config

import "time"

// Defaults returns the embedded defaults. They are valid on their own:
// duetd runs with no file, no environment and no flags. scripts/duetd.yaml
// spells out the same values and a test keeps the two equal.
func Defaults() Config {
	return Config{
		TCP:   TCP{Listen: ":7070"},
		WS:    WS{Listen: ":8080", AllowedOrigins: []string{}},
		Admin: Admin{Listen: "127.0.0.1:9090"},
		Log:   Log{Level: "info", Format: "auto"},
		Limits: Limits{
			MaxLine:          16384,
			MaxFrame:         131072,
			MaxText:          16384,
			LoginTimeout:     60 * time.Second,
			HandshakeTimeout: 5 * time.Second,
			IdleTimeout:      90 * time.Second,
			PingInterval:     30 * time.Second,
			TCPKeepAlive:     60 * time.Second,
			MaxConns:         100000,
			MaxConnsPerIP:    64,
			IPv6Prefix:       64,
			MessageRate:      200,
			MessageBurst:     2000,
			OutboundHigh:     262144,
			OutboundMax:      4194304,
			SlowTimeout:      30 * time.Second,
			ConnectFailures:  10,
		},
		Auth:            Auth{Mode: "open", UsersFile: "", Takeover: false},
		Resume:          Resume{Window: 2 * time.Minute, Buffer: 262144, MaxAway: 0, MaxAwayPerIP: 0, ReplayRecent: 30 * time.Second},
		Cluster:         Cluster{Redis: "", NodeID: "", Secret: "", SecretFile: ""},
		Shutdown:        Shutdown{DrainPeriod: 5 * time.Second},
		ShutdownTimeout: 10 * time.Second,
		TrustedProxies:  []string{},
	}
}
