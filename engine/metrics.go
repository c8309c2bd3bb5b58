package engine

// Metrics receives the counts only the engine can make: connections as
// they open and close and how each ended, refusals, errors told to users
// and slow readers cut off. Everything the pairing core knows (users, pairs, messages) is read
// from hub.Stats at scrape time instead, so relaying a message costs no
// metric update at all.
//
// The methods are called on event loops and must not block.
type Metrics interface {
	// ConnOpened and ConnClosed bracket a connection of one protocol:
	// "line", "http" (the web port before an upgrade) or "ws". A
	// connection opens once, as "line" or "http" by its port.
	ConnOpened(protocol string)
	ConnClosed(protocol string)
	// Upgraded counts a web connection become a WebSocket: from then on
	// its protocol is "ws", and its close a "ws" one. It opens nothing:
	// the connection was counted opened as "http".
	Upgraded()
	// Rejected counts a connection refused before it could be used, by
	// the label of its ending: "shutting_down", "server_full",
	// "too_many_connections", "untrusted_proxy", "bad_proxy_header",
	// "http_request" (an HTTP request on the line port, such as a web
	// page's fetch). Each is counted by Disconnected as well.
	Rejected(reason string)
	// Error counts an error told to a user, by its stable code.
	Error(code string)
	// SlowCut counts a reader cut off for not reading.
	SlowCut()
	// Disconnected counts a connection's end by its ending's label
	// (ending.go), once for every connection: those refused as they
	// open, and every one that opened, whoever closed it.
	Disconnected(reason string)
}

// A MetricsDeclarer is Metrics that shows each of its series from the
// start, at zero: the engine declares the labels it may count, once, as
// it is made. A counter whose first event makes its series appear reads
// as no increase to a rate or an alert; one at zero does not.
type MetricsDeclarer interface {
	// Declare names every label Rejected (refusals) and Disconnected
	// (endings) may be called with.
	Declare(refusals, endings []string)
}

// declareLabels declares the endings table's labels to m, if it takes
// them (MetricsDeclarer).
func declareLabels(m Metrics) {
	d, ok := m.(MetricsDeclarer)
	if !ok {
		return
	}
	var refusals, all []string
	for _, info := range endings {
		if info.label == "" {
			continue // endNone: no ending
		}
		all = append(all, info.label)
		if info.refusal {
			refusals = append(refusals, info.label)
		}
	}
	d.Declare(refusals, all)
}

// Protocol names used with Metrics.
const (
	protoLine = "line"
	protoHTTP = "http"
	protoWS   = "ws"
)

// noMetrics is the default when Options.Metrics is nil.
type noMetrics struct{}

func (noMetrics) ConnOpened(string)   {}
func (noMetrics) ConnClosed(string)   {}
func (noMetrics) Upgraded()           {}
func (noMetrics) Rejected(string)     {}
func (noMetrics) Error(string)        {}
func (noMetrics) SlowCut()            {}
func (noMetrics) Disconnected(string) {}

// protocol names the protocol a connection speaks now, for Metrics.
func (cn *conn) protocol() string {
	switch cn.stage {
	case stageHTTP:
		return protoHTTP
	case stageWS:
		return protoWS
	}
	return protoLine
}
