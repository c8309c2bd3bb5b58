package hub

import "duet/proto"

// LoginReplacing is Login for an account that may already be online
// (accounts mode with takeover on). If a session of that name exists, it
// is logged out first: its partner is told proto.ReasonReplaced, its name
// and token are freed, and its Queue is evicted (Queue.Evict with
// EvictReplaced) so that its connection tells its user why and closes;
// its Outbox is returned, or nil if the session was away (no connection
// carried it). The new session takes the name here in the same step, so
// no third login can slip in between.
//
// The caller must have checked that the user owns the name (a password);
// the hub only keeps names unique. The directory is asked in the
// caller's goroutine, logout included: with a cluster's directory, call
// it off the event loop.
func (h *Hub) LoginReplacing(name []byte, out Outbox) (s *Session, replaced Outbox, err *proto.Error) {
	return h.loginReplacing(name, out, false)
}

// LoginReplacingAway is Login for an account whose session may be away
// (accounts mode with takeover off): a user who lost the resume key, or
// whose client cannot resume, logs in with the password and is not
// locked out for resume.window. A session of that name that is away is
// logged out first, as LoginReplacing does (its partner is told
// proto.ReasonReplaced); one that is attached keeps the name, and the
// login fails with name_taken, as Login's does. The caller's rules of
// LoginReplacing apply.
func (h *Hub) LoginReplacingAway(name []byte, out Outbox) (*Session, *proto.Error) {
	s, _, err := h.loginReplacing(name, out, true)
	return s, err
}

func (h *Hub) loginReplacing(name []byte, out Outbox, onlyAway bool) (s *Session, replaced Outbox, err *proto.Error) {
	if !proto.ValidName(name) {
		return nil, nil, proto.ErrBadName
	}
	s, rk := h.newSession(name, out)
	key := s.Key() // folded once, as Login does
	lo, ok, err := h.takeOver(s, key, onlyAway)
	if err != nil {
		return nil, nil, err
	}
	if ok {
		// The old record goes before the new one is registered under
		// the same name.
		lo.finish(proto.ReasonReplaced, 0)
		if !lo.wasAway {
			defer lo.s.q.Evict(EvictReplaced)
			replaced = lo.s.outbox()
		}
	}
	// A session of the account on another node of a cluster is that
	// node's to log out: asked, once, when the directory finds the
	// name taken.
	var evict func() bool
	if mv, ok := h.dir.(Mover); ok {
		evict = func() bool { return mv.Evict(key, onlyAway) == nil }
	}
	if err := h.register(s, key, rk, evict); err != nil {
		return nil, replaced, err
	}
	return s, replaced, nil
}

// Evict logs out the session key of this hub for a login of the same
// account on another node (Mover.Evict asks it there): with onlyAway,
// only if it is away (proto.ErrNameTaken if it is attached). Its
// partner is told it was replaced, and its connection, if any, is
// evicted, as LoginReplacing does to a session of this hub. A name not
// here is free as far as this hub goes: nil.
func (h *Hub) Evict(key string, onlyAway bool) *proto.Error {
	h.mu.Lock()
	old := h.names.filed(key)
	if old == nil || !old.keyIs(key) {
		h.mu.Unlock()
		return nil
	}
	if onlyAway && old.away == nil {
		h.mu.Unlock()
		return proto.ErrNameTaken
	}
	lo, ok := h.logoutLocked(old)
	h.mu.Unlock()
	if ok {
		lo.finish(proto.ReasonReplaced, 0)
		if !lo.wasAway {
			lo.s.q.Evict(EvictReplaced)
		}
	}
	return nil
}

// takeOver enters s under its name (key, its Key) and a fresh token
// here, logging out the session that held the name, if any (with
// onlyAway, if it is away; else the name is taken), whose logout it
// returns.
func (h *Hub) takeOver(s *Session, key string, onlyAway bool) (lo logout, ok bool, err *proto.Error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if old := h.names.filed(key); old != nil {
		if !old.keyIs(key) || onlyAway && old.away == nil {
			// Another name filed in its place (nameIndex), or the
			// name's holder is here and not to be taken over.
			return logout{}, false, proto.ErrNameTaken
		}
		lo, ok = h.logoutLocked(old)
	}
	h.enterLocked(s, key)
	return lo, ok, nil
}
