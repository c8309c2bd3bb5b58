package hub

import "duet/proto"

// LoginReplacing is Login for an account that may already be online
// (accounts mode with takeover on). If a session of that name exists, it
// is logged out first: its partner is told proto.ReasonReplaced, its name
// and token are freed, and its Queue is evicted (Queue.Evict with
// EvictReplaced) so that its connection tells its user why and closes;
// its Outbox is returned.
// The new session takes the name here in the same step, so no third
// login can slip in between.
//
// The caller must have checked that the user owns the name (a password);
// the hub only keeps names unique. The directory is asked in the
// caller's goroutine, logout included: with a cluster's directory, call
// it off the event loop.
func (h *Hub) LoginReplacing(name []byte, out Outbox) (s *Session, replaced Outbox, err *proto.Error) {
	if !proto.ValidName(name) {
		return nil, nil, proto.ErrBadName
	}
	s = h.newSession(name, out)
	if lo, ok := h.takeOver(s); ok {
		// The old record goes before the new one is registered under
		// the same name.
		lo.finish(proto.ReasonReplaced, 0)
		defer lo.s.q.Evict(EvictReplaced)
		replaced = lo.s.out
	}
	if err := h.register(s); err != nil {
		return nil, replaced, err
	}
	return s, replaced, nil
}

// takeOver enters s under its name and a fresh token here, logging out
// the session that held the name, if any, whose logout it returns.
func (h *Hub) takeOver(s *Session) (lo logout, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if old := h.names[s.key]; old != nil {
		lo, ok = h.logoutLocked(old)
	}
	h.enterLocked(s)
	return lo, ok
}
